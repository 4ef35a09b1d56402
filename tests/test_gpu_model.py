"""benchmarks/gpu_model.py: the fake-tensor trace of the streaming pipeline, checked at a small
size against analytic counts (structure only; no timing)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from adastate_core.model import WanConfig

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_model  # noqa: E402

CFG = WanConfig(
    dim=64, ffn_dim=128, num_heads=4, num_layers=3, freq_dim=32, text_dim=32, text_len=16
)
H, W = 32, 48  # latent 4 x 6, 2 x 3 = 6 tokens per frame
VAE_DIM = 8
TOK = (H // 16) * (W // 16)
LIVE = 1 + 3  # state + content frames
KEYS = 1 + 1 + 3 + 3  # anchor + state + window + content frames


def linear_flops(cfg: WanConfig, frames: int, full_layers: int, kv_layers: int, head: bool):
    """2 * rows * in * out summed over every linear of one DiT call (B = 1)."""
    n, d = frames * TOK, cfg.dim
    per_layer = 2 * n * (6 * d * d + 2 * d * cfg.ffn_dim)  # self qkvo, cross q o, FFN
    patch = 2 * n * cfg.in_dim * math.prod(cfg.patch_size) * d
    time = 2 * frames * (cfg.freq_dim * d + d * d + d * 6 * d)  # embedding + projection
    out = full_layers * per_layer + kv_layers * 2 * n * 2 * d * d + patch + time
    return out + (2 * n * d * cfg.patch_channels if head else 0)


def attention_flops(cfg: WanConfig, layers: int) -> int:
    """QK^T and PV: 4 * queries * keys * dim per layer, self (window) plus cross (text)."""
    n = LIVE * TOK
    return layers * 4 * n * (KEYS * TOK + cfg.text_len) * cfg.dim


@pytest.fixture(scope="module")
def traced():
    trace = gpu_model.trace_stream(CFG, height=H, width=W, vae_dim=VAE_DIM)
    return trace, gpu_model.summarize(trace)


def test_phases_calls_and_frames(traced):
    trace, s = traced
    assert s["steady_chunk"] == trace.chunks - 1 >= 3  # second steady chunk (k*C > W from k=2)
    ph = s["phases"]
    assert ph["denoise"]["dit_calls"] == 4 and ph["update"]["dit_calls"] == 1
    assert ph["decode"]["vae_decoder_calls"] == 3 and ph["decode"]["dit_calls"] == 0
    assert s["frames_per_chunk"] == 12 and s["frames_by_chunk"][0] == 9
    for p in ("denoise", "update", "decode"):
        assert ph[p]["kernels"] > 0 and ph[p]["memory_bound_gb"] > 0
        assert ph[p]["view_ops"] > 0
    assert sum(r["kernels"] for r in ph.values()) == s["total"]["kernels"]


def test_gemm_flops_match_the_linear_layers(traced):
    _, s = traced
    calls = s["dit_calls"]
    denoise = [c for c in calls if c["phase"] == "denoise"]
    update = [c for c in calls if c["phase"] == "update"]
    assert len(denoise) == 4 and len(update) == 1
    one = linear_flops(CFG, LIVE, CFG.num_layers, 0, head=True)
    for c in denoise:
        assert c["gemm_tflop"] * 1e12 == pytest.approx(one, rel=1e-9)
    assert s["phases"]["denoise"]["gemm_tflop"] == pytest.approx(4 * one / 1e12, rel=0.01)
    # t = 0 pass: the last block computes only its K/V, no head
    t0 = linear_flops(CFG, LIVE, CFG.num_layers - 1, 1, head=False)
    assert update[0]["gemm_tflop"] * 1e12 == pytest.approx(t0, rel=1e-9)


def test_attention_flops_match_the_window(traced):
    _, s = traced
    ph = s["phases"]
    assert ph["denoise"]["attention_tflop"] * 1e12 == pytest.approx(
        4 * attention_flops(CFG, CFG.num_layers), rel=1e-9
    )
    assert ph["update"]["attention_tflop"] * 1e12 == pytest.approx(
        attention_flops(CFG, CFG.num_layers - 1), rel=1e-9
    )
    hw, c = (H // 8) * (W // 8), 4 * VAE_DIM  # VAE middle attention, one per latent frame
    assert ph["decode"]["attention_tflop"] * 1e12 == pytest.approx(3 * 4 * hw * hw * c)
    assert ph["denoise"]["attention_kernels"] == 4 * 2 * CFG.num_layers


def test_rmsnorm_is_one_kernel(traced):
    """CPU decomposes F.rms_norm; the model prices it as CUDA's one fused kernel."""
    trace, s = traced
    first = next(o.dit_call for o in trace.ops if o.chunk == s["steady_chunk"] and o.dit_call)
    norms = [o for o in trace.ops if o.dit_call == first and o.name.startswith("rms_norm")]
    assert len(norms) == 3 * CFG.num_layers  # self q, self k, cross q per block
    assert all(o.kind == "mem" and o.nbytes > 0 for o in norms)


def test_memory_transfers_and_roofline(traced):
    trace, s = traced
    from adastate_core.model.formats import COMPUTE_WEIGHT

    weights = sum(trace.weights.values())
    dit = sum(  # the loader's policy: linears in bf16, the rest fp32
        math.prod(shape) * (2 if COMPUTE_WEIGHT.match(key) else 4)
        for key, shape in CFG.tensor_shapes().items()
    )
    assert trace.weights["dit"] == dit
    for p, r in s["phases"].items():
        assert r["peak_live_gb"] * 1e9 >= weights, p
        assert r["peak_live_gb"] >= r["live_at_start_gb"], p
    assert s["global_peak_gb"] >= s["total"]["peak_live_gb"]
    # the chunk's frames leave the device: one D2H of at least T*H*W*3 bytes
    d2h = [a for a in s["syncs_by_site"] if a["kind"] == "d2h"]
    assert any(a["mb"] * 1e6 >= 12 * H * W * 3 for a in d2h)
    assert all(a["line"].startswith("adastate_core/") for a in s["syncs_by_site"])
    for key in ("h100", "h200"):
        ms = s["total"][f"{key}_ms"]
        assert 0 < ms < math.inf and 0 < s["total"][f"{key}_fps"] < math.inf
        assert ms == pytest.approx(sum(r[f"{key}_ms"] for r in s["phases"].values()))
        assert 0 < s["first_frame"][f"{key}_ms"] < math.inf
    # more bandwidth never makes it slower; the kernel floor bounds it from below
    assert s["total"]["h200_ms"] <= s["total"]["h100_ms"]
    assert s["total"]["h100_ms"] >= s["total"]["kernels"] * gpu_model.H100.kernel_us / 1e3
    assert s["top_lines_by_memory_gb"] and s["top_lines_by_kernels"]
    json.dumps(gpu_model._jsonable(s))  # --json works
    assert "MODEL" in gpu_model.render(s)


def test_bf16_residual_moves_fewer_bytes():
    trace = gpu_model.trace_stream(
        CFG, height=H, width=W, vae_dim=VAE_DIM, precise=torch.bfloat16, chunks=3
    )
    fp32 = gpu_model.trace_stream(CFG, height=H, width=W, vae_dim=VAE_DIM, chunks=3)
    a, b = gpu_model.summarize(trace), gpu_model.summarize(fp32)
    assert a["phases"]["denoise"]["memory_bound_gb"] < b["phases"]["denoise"]["memory_bound_gb"]
    assert a["phases"]["denoise"]["gemm_tflop"] == pytest.approx(
        b["phases"]["denoise"]["gemm_tflop"]
    )


def test_read_back_buffers_never_hold_garbage(monkeypatch):
    """A host buffer that receives device data (the pipeline's pinned copies) holds the
    placeholder value a device read gets, not whatever torch.empty left there: here every
    empty host buffer starts zeroed (False), as uninitialised memory sometimes is, and the
    writer's finite check must still see a finite chunk."""
    real_empty = torch.empty

    def zeroed_empty(*args, **kwargs):
        return real_empty(*args, **kwargs).zero_()

    monkeypatch.setattr(torch, "empty", zeroed_empty)
    trace = gpu_model.trace_stream(CFG, height=H, width=W, vae_dim=VAE_DIM, chunks=3)
    assert sorted(trace.frames) == [0, 1, 2]


@pytest.mark.slow
def test_full_size_1_3b(tmp_path):
    """The 1.3B at 480x832 (about a minute): the analytic FLOPs at full size."""
    out = tmp_path / "model.json"
    s = gpu_model.main(["--json", str(out)])
    assert json.loads(out.read_text())["frames_per_chunk"] == 12
    cfg = WanConfig()
    tok = 30 * 52
    n = 4 * tok
    d = cfg.dim
    per_layer = 2 * n * (6 * d * d + 2 * d * cfg.ffn_dim)
    one = (
        cfg.num_layers * per_layer
        + 2 * n * 64 * d
        + 2 * 4 * (cfg.freq_dim * d + 7 * d * d)
        + 2 * n * d * 64
    )
    assert s["phases"]["denoise"]["gemm_tflop"] * 1e12 == pytest.approx(4 * one, rel=1e-9)
    attn = cfg.num_layers * 4 * n * (8 * tok + cfg.text_len) * d
    assert s["phases"]["denoise"]["attention_tflop"] * 1e12 == pytest.approx(4 * attn, rel=1e-9)
    assert 2.8 < s["weights_gb"]["dit"] < 3.0
