"""Properties of the causal DiT interface beyond the fixtures (tiny random-weight models)."""

from __future__ import annotations

import logging

import pytest
import torch

from adastate_core.model import CausalWanDiT, KVSegment, WanConfig
from adastate_core.model.random_weights import TINY, random_state_dict

from conftest import TOL, max_err, tiny_model


def _inputs(seed=0, frames=4, h=8, w=12, batch=1, cfg=TINY):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, frames, h, w, generator=g)
    ctx = torch.randn(batch, 5, cfg.text_dim, generator=g)
    return x, ctx


def test_every_parameter_is_random():
    sd = random_state_dict(TINY, seed=3)
    assert all(v.abs().min() > 0 or v.std() > 0 for v in sd.values())
    assert all(v.std() > 0 for v in sd.values())


def test_scalar_batch_and_per_frame_timesteps_agree():
    model = tiny_model()
    x, ctx = _inputs(batch=2)
    with torch.no_grad():
        a = model(x, 500.0, ctx)
        b = model(x, torch.tensor([500.0, 500.0]), ctx)
        c = model(x, torch.full((2, 4), 500.0), ctx)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_per_frame_timesteps_modulate_each_frame():
    """Frame f of a [B, F] call equals the same frame of a uniform call at t[f] when frames
    cannot see each other (one frame at a time)."""
    model = tiny_model()
    x, ctx = _inputs(frames=1)
    with torch.no_grad():
        lo = model(x, 100.0, ctx)
        hi = model(x, 900.0, ctx)
        two = model(torch.cat([x, x], 2), torch.tensor([[100.0, 900.0]]), ctx)
    assert not torch.allclose(two[:, :, 0], two[:, :, 1])
    assert not torch.allclose(lo, hi)
    # per-frame modulation differs only where the timestep differs
    assert max_err(model(x, torch.tensor([[100.0]]), ctx), lo) == 0


def test_batch_rows_are_independent():
    model = tiny_model()
    x, ctx = _inputs(batch=2)
    with torch.no_grad():
        both = model(x, torch.tensor([250.0, 750.0]), ctx)
        first = model(x[:1], 250.0, ctx[:1])
        second = model(x[1:], 750.0, ctx[1:])
    assert max_err(both[:1], first) <= 1e-6 and max_err(both[1:], second) <= 1e-6


def test_returned_kv_is_unroped_and_relocatable():
    """The cache holds keys without RoPE: the first layer's K/V do not depend on positions at
    all, later layers only through relative positions; so shifting every position (past the
    official 1024-entry tables) leaves K/V and outputs unchanged up to rounding."""
    model = tiny_model()
    x, ctx = _inputs(frames=4)
    with torch.no_grad():
        _, kv_a = model(x[:, :, :2], 600.0, ctx, positions=[0, 1], return_kv=True)
        _, kv_b = model(x[:, :, :2], 600.0, ctx, positions=[5000, 5001], return_kv=True)
        assert torch.equal(kv_a.k[0], kv_b.k[0]) and torch.equal(kv_a.v[0], kv_b.v[0])
        assert max_err(kv_a.k, kv_b.k) <= TOL and max_err(kv_a.v, kv_b.v) <= TOL
        near = model(x[:, :, 2:], 600.0, ctx, cache=[kv_a], positions=[2, 3])
        far = model(x[:, :, 2:], 600.0, ctx, cache=[kv_a.at([5000, 5001])], positions=[5002, 5003])
    assert max_err(near, far) <= TOL


def test_cache_write_pass_equals_forward_kv():
    model = tiny_model()
    x, ctx = _inputs(frames=4)
    with torch.no_grad():
        _, kv0 = model(x[:, :, :2], 0.0, ctx, return_kv=True)
        _, kv = model(x[:, :, 2:], 0.0, ctx, cache=[kv0], return_kv=True)
        kv_only = model.cache_kv(x[:, :, 2:], ctx, cache=[kv0])
    assert torch.equal(kv.k, kv_only.k) and torch.equal(kv.v, kv_only.v)
    assert kv.positions.tolist() == [2.0, 3.0]
    assert kv.k.shape == (TINY.num_layers, 1, 2, 4 * 6, TINY.dim)


def test_segments_concatenate_like_one_cache():
    """Attending to two segments equals attending to their concatenation."""
    model = tiny_model()
    x, ctx = _inputs(frames=6)
    with torch.no_grad():
        _, kv = model(x[:, :, :4], 0.0, ctx, return_kv=True)
        one = model(x[:, :, 4:], 400.0, ctx, cache=[kv])
        two = model(x[:, :, 4:], 400.0, ctx, cache=[kv.frames(0, 1), kv.frames(1, 4)])
    assert max_err(one, two) <= 1e-6


def test_inputs_are_never_modified():
    model = tiny_model()
    x, ctx = _inputs(frames=4)
    with torch.no_grad():
        _, kv = model(x[:, :, :2], 0.0, ctx, return_kv=True)
        before = [t.clone() for t in (x, ctx, kv.k, kv.v, kv.positions)]
        cross = model.encode_context(ctx)
        cross_before = (cross.k.clone(), cross.v.clone())
        model(x[:, :, 2:], torch.tensor([[300.0, 700.0]]), cross, cache=[kv], return_kv=True)
    for a, b in zip(before, (x, ctx, kv.k, kv.v, kv.positions)):
        assert torch.equal(a, b)
    assert torch.equal(cross_before[0], cross.k) and torch.equal(cross_before[1], cross.v)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.1), (torch.float16, 0.02)])
def test_half_precision_stays_close_to_fp32(dtype, tol):
    ref = tiny_model(seed=1)
    low = tiny_model(seed=1, compute_dtype=dtype)
    low.load_state_dict(
        {
            k: v.to(dtype) if v.ndim >= 2 and "modulation" not in k else v
            for k, v in ref.state_dict().items()
        },
        assign=True,
    )
    x, ctx = _inputs(frames=4)
    with torch.no_grad():
        a = ref(x, 500.0, ctx)
        b = low(x, 500.0, ctx)
    assert b.dtype == torch.float32  # head and residual stream stay fp32
    rel = max_err(a, b) / a.abs().max().item()
    assert rel < tol, rel
    assert max_err(a, b) > 0  # it really ran in reduced precision


def test_context_and_latent_validation():
    model = tiny_model()
    x, ctx = _inputs()
    with pytest.raises(ValueError, match="text conditioning must be"):
        model(x, 500.0, torch.randn(1, 5, 31))
    with pytest.raises(ValueError, match="at most 16"):
        model(x, 500.0, torch.randn(1, 17, 32))
    with pytest.raises(ValueError, match="multiples of the patch"):
        model(torch.randn(1, 16, 2, 7, 12), 500.0, ctx)
    with pytest.raises(ValueError, match=r"latent must be \[batch, 16"):
        model(torch.randn(1, 4, 2, 8, 12), 500.0, ctx)
    with pytest.raises(ValueError, match="timestep must be"):
        model(x, torch.zeros(1, 3), ctx)
    with pytest.raises(ValueError, match="positions given"):
        model(x, 500.0, ctx, positions=[0, 1])
    _, kv = model(x[:, :, :2], 0.0, ctx, return_kv=True)
    with pytest.raises(ValueError, match="another resolution"):
        model(torch.randn(1, 16, 2, 8, 8), 500.0, ctx, cache=[kv])
    with pytest.raises(ValueError, match="prompt batch"):
        model(torch.randn(3, 16, 2, 8, 12), 500.0, torch.randn(2, 5, 32))


def test_sageattention_request_falls_back_with_notice(caplog, monkeypatch):
    from adastate_core.model import attention

    monkeypatch.setattr(attention, "_notified", set())
    with caplog.at_level(logging.WARNING, logger="adastate"):
        model = tiny_model(attention="sageattention")
    if not torch.cuda.is_available():
        assert "sageattention" in caplog.text and "using sdpa" in caplog.text
    x, ctx = _inputs()
    ref = tiny_model()
    with torch.no_grad():
        assert torch.equal(model(x, 500.0, ctx), ref(x, 500.0, ctx))
    with pytest.raises(ValueError, match="unknown attention backend"):
        model.set_attention("flash9")


def test_any_size_runs_including_other_head_widths():
    cfg = WanConfig(
        dim=96, ffn_dim=160, num_heads=2, num_layers=3, freq_dim=16, text_dim=24, text_len=8
    )
    model = CausalWanDiT(cfg)
    model.load_state_dict(random_state_dict(cfg, 5))
    x = torch.randn(1, 16, 3, 4, 6)
    with torch.no_grad():
        out, kv = model(x, 999.0, torch.randn(1, 8, 24), return_kv=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert isinstance(kv, KVSegment) and kv.k.shape == (3, 1, 3, 6, 96)


def test_fingerprint_works_on_inference_tensors():
    """ComfyUI runs nodes under torch.inference_mode(): weights created there have no
    version counter."""
    with torch.inference_mode():
        model = tiny_model(seed=2)
        fp = model.fingerprint()
    assert fp == tiny_model(seed=2).fingerprint() and fp != tiny_model(seed=3).fingerprint()
