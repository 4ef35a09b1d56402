"""Checkpoint formats: each real layout, written by the test with tiny random weights, loads to
identical tensors; files that are not a usable Wan2.1 T2V DiT get a message saying what they are."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from adastate_core.errors import CheckpointError
from adastate_core.model import (
    KNOWN_SIZES,
    inspect_checkpoint,
    load_dit,
    load_state_dict,
    read_checkpoint,
)
from adastate_core.model.random_weights import TINY, random_state_dict

from conftest import REPO

SD = random_state_dict(TINY, seed=7)
KW = {"text_len": 16, "num_heads": 4}  # cannot be read from shapes


def _same(loaded: dict, expected: dict) -> None:
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert loaded[k].dtype == torch.float32
        assert torch.equal(loaded[k], v.float()), k


def _fp8_scaled(sd: dict) -> tuple[dict, dict]:
    """ComfyUI-style scaled fp8: linear weights in blocks as e4m3fn with a per-tensor scale."""
    out, expected = {}, {}
    for k, v in sd.items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            scale = v.abs().max() / 448.0
            q = (v / scale).to(torch.float8_e4m3fn)
            out[k], out[k[: -len("weight")] + "scale_weight"] = q, scale.reshape(1)
            expected[k] = q.float() * scale
        else:
            out[k], expected[k] = v, v
    out["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return out, expected


# --- formats that load ---------------------------------------------------------------------------


def test_official_safetensors(tmp_path):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(SD, str(path))
    _same(load_state_dict(path, **KW), SD)
    assert inspect_checkpoint(path, **KW).format == "official Wan2.1 safetensors, fp32"


@pytest.mark.parametrize(
    "dtype,prefix", [(torch.float16, "model.diffusion_model."), (torch.bfloat16, "")]
)
def test_comfyui_repack(tmp_path, dtype, prefix):
    path = tmp_path / "wan2.1_t2v_tiny.safetensors"
    save_file({prefix + k: v.to(dtype) for k, v in SD.items()}, str(path))
    _same(load_state_dict(path, **KW), {k: v.to(dtype) for k, v in SD.items()})
    name = {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    assert inspect_checkpoint(path, **KW).format == f"ComfyUI repack safetensors, {name}"


def test_comfyui_fp8_scaled(tmp_path):
    stored, expected = _fp8_scaled(SD)
    path = tmp_path / "tiny_fp8_e4m3fn_scaled.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in stored.items()}, str(path))
    _same(load_state_dict(path, **KW), expected)
    # default: fp8 stays fp8 in memory, scaled per layer at use
    model = load_dit(path, **KW)
    q = model.blocks[0].self_attn.q
    assert q.weight.dtype == torch.float8_e4m3fn and q.scale_weight is not None
    assert torch.equal(q.weight, stored["blocks.0.self_attn.q.weight"])
    assert model.blocks[0].modulation.dtype == torch.float32
    info = inspect_checkpoint(path, **KW)
    assert "fp8 scaled" in info.format and info.num_tensors == len(SD)


def test_fp8_storage_requested_from_fp32_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file(SD, str(path))
    model = load_dit(path, **KW, weight_dtype="fp8_e4m3fn")
    assert model.blocks[1].ffn[0].weight.dtype == torch.float8_e4m3fn
    assert model.head.head.weight.dtype == torch.float32  # head stays precise
    x = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        ref = load_dit(path, **KW)(x, 500.0, torch.randn(1, 3, 32))
        out = model(x, 500.0, torch.randn(1, 3, 32))
    assert torch.isfinite(out).all() and ref.shape == out.shape


def test_diffusers_folder_single_and_sharded(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from test_diffusers_parity import diffusers_model

    ref = diffusers_model(seed=2)
    ref.save_pretrained(tmp_path / "single" / "transformer")
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="60KB")
    assert list((tmp_path / "sharded").glob("*.index.json")), diffusers.__version__
    a = load_state_dict(tmp_path / "single", **KW)
    b = load_state_dict(tmp_path / "sharded", **KW)
    c = load_state_dict(next((tmp_path / "sharded").glob("*.index.json")), **KW)
    assert len(a) == len(SD)
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k])
    assert torch.equal(a["head.modulation"], ref.scale_shift_table.detach())
    assert torch.equal(a["blocks.1.norm3.weight"], ref.blocks[1].norm2.weight.detach())
    assert inspect_checkpoint(tmp_path / "single", **KW).format.startswith("diffusers")


def test_self_forcing_pt_prefers_generator_ema(tmp_path):
    other = random_state_dict(TINY, seed=8)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save(
        {
            "generator": {"model." + k: v for k, v in other.items()},
            "generator_ema": {"model." + k: v.to(torch.bfloat16) for k, v in SD.items()},
            "critic": {"model.head.modulation": torch.zeros(1)},
        },
        path,
    )
    _same(load_state_dict(path, **KW), {k: v.to(torch.bfloat16) for k, v in SD.items()})
    info = inspect_checkpoint(path, **KW)
    assert info.format == "Self-Forcing-family PyTorch checkpoint (generator_ema), bf16"


def test_fsdp_wrapped_generator_and_plain_state_dict(tmp_path):
    def fsdp(k: str) -> str:
        parts = k.split(".")
        if parts[0] == "blocks":  # FSDP wraps each block
            return (
                "model._fsdp_wrapped_module.blocks."
                + parts[1]
                + "._fsdp_wrapped_module."
                + ".".join(parts[2:])
            )
        return "model." + k

    path = tmp_path / "causal.pt"
    torch.save({"generator": {fsdp(k): v for k, v in SD.items()}}, path)
    _same(load_state_dict(path, **KW), SD)
    plain = tmp_path / "plain.pth"
    torch.save(dict(SD), plain)
    _same(load_state_dict(plain, **KW), SD)
    _same(load_state_dict(dict(SD), **KW), SD)


def test_release_sizes_read_on_meta_device():
    """Config of 1.3B / 14B from shapes alone: no tensor is allocated."""
    for name, cfg in KNOWN_SIZES.items():
        fake = {k: torch.empty(s, device="meta") for k, s in cfg.tensor_shapes().items()}
        ckpt = read_checkpoint(fake)
        assert ckpt.config == cfg and ckpt.config.size_name() == name
    c13 = read_checkpoint(
        {
            k: torch.empty(s, device="meta")
            for k, s in KNOWN_SIZES["Wan2.1-T2V-1.3B"].tensor_shapes().items()
        }
    )
    assert len(c13.names) == 825 and c13.num_params() == 1_418_996_800


def test_meta_model_of_1_3b_has_official_counts():
    from adastate_core.model import CausalWanDiT, WanConfig

    with torch.device("meta"):
        model = CausalWanDiT(WanConfig())
    sd = model.state_dict()
    assert len(sd) == 825
    assert sum(v.numel() for v in sd.values()) == 1_418_996_800
    assert {k: tuple(v.shape) for k, v in sd.items()} == WanConfig().tensor_shapes()


# --- files that must be refused with a useful message --------------------------------------------


def _with(**extra) -> dict:
    return {**SD, **extra}


def _patch(in_dim: int, out_dim: int = 16) -> dict:
    sd = dict(SD)
    sd["patch_embedding.weight"] = torch.randn(TINY.dim, in_dim, 1, 2, 2)
    sd["head.head.weight"] = torch.randn(out_dim * 4, TINY.dim)
    sd["head.head.bias"] = torch.randn(out_dim * 4)
    return sd


BAD = {
    "i2v": (
        lambda: {**_patch(36), "img_emb.proj.1.weight": torch.randn(64, 64)},
        "image-to-video (I2V)",
    ),
    "flf2v": (
        lambda: {**_patch(36), "img_emb.emb_pos": torch.randn(1, 514, 64)},
        "first-last-frame",
    ),
    "vace": (lambda: _with(**{"vace_blocks.0.before_proj.weight": torch.randn(4, 4)}), "VACE"),
    "ti2v_5b": (lambda: _patch(48, 48), "Wan2.2 TI2V-5B model (48-channel latent"),
    "fun_control": (lambda: _patch(32), "conditioned Wan variant (32 input channels"),
    "lora": (
        lambda: {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 64)},
        "a LoRA",
    ),
    "sd_unet": (
        lambda: {"model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 4)},
        "a UNet",
    ),
    "flux": (lambda: {"double_blocks.0.img_attn.qkv.weight": torch.randn(4, 4)}, "Flux"),
    "vae": (
        lambda: {
            "decoder.conv1.weight": torch.randn(4, 4),
            "conv2.weight": torch.randn(4, 4),
            "encoder.conv1.weight": torch.randn(4, 4),
        },
        "a VAE, not a diffusion model",
    ),
    "t5": (
        lambda: {
            "shared.weight": torch.randn(8, 4),
            "encoder.block.0.layer.0.SelfAttention.q.weight": torch.randn(4, 4),
        },
        "text encoder",
    ),
    "clip": (lambda: {"text_model.encoder.layers.0.mlp.fc1.weight": torch.randn(4, 4)}, "CLIP"),
    "missing": (
        lambda: {k: v for k, v in SD.items() if k != "blocks.1.ffn.2.bias"},
        "1 missing tensor(s): blocks.1.ffn.2.bias",
    ),
    "extra": (
        lambda: _with(**{"blocks.0.extra_gate.weight": torch.randn(2)}),
        "unexpected tensor(s): blocks.0.extra_gate.weight",
    ),
    "wrong_shape": (
        lambda: _with(**{"blocks.1.norm3.bias": torch.randn(63)}),
        "shape mismatch: blocks.1.norm3.bias [63] != [64]",
    ),
    "unknown": (lambda: {"foo.bar": torch.randn(3)}, "is not a Wan2.1 DiT"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_refused_with_message(tmp_path, case):
    make, message = BAD[case]
    path = tmp_path / f"{case}.safetensors"
    save_file(make(), str(path))
    with pytest.raises(CheckpointError) as err:
        load_dit(path, **KW)
    assert message in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_truncated_and_corrupt_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file(SD, str(good))
    data = good.read_bytes()
    for name, blob in [
        ("half.safetensors", data[: len(data) // 2]),
        ("head.safetensors", data[:5]),
        ("junk.safetensors", b"\x00" * 64),
    ]:
        bad = tmp_path / name
        bad.write_bytes(blob)
        with pytest.raises(CheckpointError, match="truncated or corrupt|empty or truncated"):
            load_dit(bad, **KW)
    pt = tmp_path / "good.pt"
    torch.save({"generator": dict(SD)}, pt)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_dit(cut, **KW)
    with pytest.raises(CheckpointError, match="model file not found"):
        load_dit(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.bin2"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_dit(empty)


class Payload:  # a Python object that weights_only refuses to unpickle
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_pickle_is_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "unsafe.pt"
    with open(path, "wb") as fh:
        torch.save({"generator": dict(SD), "config": Payload()}, fh, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="weights_only=True\\) refuses"):
        load_dit(path, **KW)
    assert "this must never run" not in capsys.readouterr().out


def test_pickle_without_weights(tmp_path):
    path = tmp_path / "opt.pt"
    torch.save({"step": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_dit(path)


# --- the CLI ----------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adastate_core", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_cli_info(tmp_path):
    path = tmp_path / "wan_tiny_fp16.safetensors"
    save_file({"model.diffusion_model." + k: v.half() for k, v in SD.items()}, str(path))
    res = _cli("info", str(path), "--text-len", "16", "--num-heads", "4")
    assert res.returncode == 0, res.stderr
    n = sum(v.numel() for v in SD.values())
    assert "ComfyUI repack safetensors, fp16" in res.stdout
    assert f"{n:,} in {len(SD)} tensors" in res.stdout
    assert "float16" in res.stdout and "causal few-step" in res.stdout


def test_cli_info_on_a_vae_says_so(tmp_path):
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(
        {"decoder.conv1.weight": torch.randn(2, 2), "conv2.weight": torch.randn(2, 2)}, str(path)
    )
    res = _cli("info", str(path))
    assert res.returncode == 2
    assert "a VAE, not a diffusion model" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "layout,ext", [("comfyui", "safetensors"), ("official", "safetensors"), ("self-forcing", "pt")]
)
def test_cli_tiny_model_roundtrip(tmp_path, layout, ext):
    """`adastate tiny-model` writes a real layout whose config hints make it load unaided."""
    path = tmp_path / f"tiny.{ext}"
    res = _cli("tiny-model", str(path), "--layout", layout, "--seed", "7")
    assert res.returncode == 0, res.stderr
    cast = {"comfyui": torch.float16, "official": torch.float32, "self-forcing": torch.bfloat16}[
        layout
    ]
    _same(load_state_dict(path), {k: v.to(cast) for k, v in SD.items()})
    assert load_dit(path).config == TINY


def test_reading_is_lazy_and_single_pass(tmp_path, monkeypatch):
    """Recognising a file reads no tensor; loading reads each tensor exactly once."""
    from adastate_core.model import loader

    path = tmp_path / "m.safetensors"
    save_file(SD, str(path))
    reads: list[str] = []
    real_open = loader.open_raw

    def counting_open(source):
        raw = real_open(source)
        read = raw.read
        raw.read = lambda key: (reads.append(key), read(key))[1]
        return raw

    monkeypatch.setattr(loader, "open_raw", counting_open)
    loader.read_checkpoint(path, **KW)
    assert reads == []
    loader.load_dit(path, **KW)
    assert sorted(reads) == sorted(SD)


def test_cli_convert_self_forcing_pt_to_comfyui_safetensors(tmp_path):
    """`adastate convert` turns a Self-Forcing .pt into a ComfyUI-repack safetensors (the format
    ComfyUI's missing-models dialog can download) with identical weights, and never replaces
    an existing file."""
    from safetensors import safe_open

    from adastate_core.model.random_weights import save_random_checkpoint

    pt = save_random_checkpoint(
        tmp_path / "self_forcing_dmd.pt", TINY, seed=7, layout="self-forcing"
    )
    out = tmp_path / "models" / "self_forcing_dmd.safetensors"
    res = _cli("convert", str(pt), str(out))
    assert res.returncode == 0, res.stderr
    assert "ComfyUI repack safetensors" in res.stdout
    assert inspect_checkpoint(out).format == "ComfyUI repack safetensors, bf16"
    _same(load_state_dict(out), load_state_dict(pt))
    with safe_open(str(out), "pt") as f:
        assert all(k.startswith("model.diffusion_model.") for k in f.keys())
        assert f.metadata()["converted_from"] == "self_forcing_dmd.pt"
    assert load_dit(out).config == TINY  # heads / text length kept in the metadata

    before = out.read_bytes()
    again = _cli("convert", str(pt), str(out))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert "Traceback" not in again.stderr and out.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["self_forcing_dmd.safetensors"]

    fp16 = tmp_path / "fp16.safetensors"
    assert _cli("convert", str(out), str(fp16), "--dtype", "fp16").returncode == 0
    assert inspect_checkpoint(fp16).format == "ComfyUI repack safetensors, fp16"
    with safe_open(str(fp16), "pt") as f:
        transformer = json.loads(f.metadata()["config"])["transformer"]
    assert "causal_ar" not in transformer
    assert transformer["num_heads"] == TINY.num_heads and transformer["text_dim"] == TINY.text_dim

    # causal_ar: ComfyUI's own loader builds its CausalWanModel from it; we read it the same
    ar = tmp_path / "ar.safetensors"
    res = _cli("convert", str(pt), str(ar), "--causal-ar")
    assert res.returncode == 0 and "causal_ar" in res.stdout, res.stderr
    with safe_open(str(ar), "pt") as f:
        config = json.loads(f.metadata()["config"])
    assert config["transformer"]["causal_ar"] is True
    assert config["transformer"]["freq_dim"] == TINY.freq_dim
    assert load_dit(ar).config == TINY
    _same(load_state_dict(ar), load_state_dict(pt))
    bad = _cli("convert", str(pt), str(tmp_path / "x.pt"))
    assert bad.returncode == 2 and ".safetensors" in bad.stderr


def test_convert_applies_fp8_scales(tmp_path):
    from adastate_core.model.convert import convert_checkpoint

    q, expected = _fp8_scaled(SD)
    src = tmp_path / "fp8.safetensors"
    save_file(q, str(src), {"config": '{"num_heads": 4, "text_len": 16}'})
    out = convert_checkpoint(src, tmp_path / "dequant.safetensors", dtype="fp32")
    _same(load_state_dict(out), expected)
