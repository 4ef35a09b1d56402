"""Wan2.1 VAE decoder: parity with the official decode (golden fixture) and with diffusers'
AutoencoderKLWan, streaming = one-shot, an immutable cache, every file format, clear errors."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest
import torch
from safetensors.torch import save_file

from adastate_core.errors import CheckpointError
from adastate_core.model.random_weights import TINY
from adastate_core.model.random_weights import random_state_dict as random_dit_state_dict
from adastate_core.vae import (
    DecoderCache,
    WanVAEDecoder,
    estimate_cache_bytes,
    load_vae,
    read_vae_checkpoint,
    video_frames,
)
from adastate_core.vae.formats import diffusers_to_official
from adastate_core.vae.random_weights import random_state_dict, randomise_

from conftest import REPO, TOL, load_fixture, max_err

sys.path.insert(0, str(REPO / "benchmarks"))
import decode as decode_bench  # noqa: E402

CHUNKINGS = [[3, 3, 1], [1, 3, 3], [2, 2, 2, 1], [1] * 7, [7], [4, 3], [1, 6], [5, 2]]


@pytest.fixture(scope="module")
def fixture():
    """(decoder with the fixture weights, fixture tensors, official-name state dict)."""
    tensors, meta = load_fixture("wan_vae_tiny_decoder.safetensors")
    config = json.loads(meta["config"])
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    model = load_vae(weights)
    assert (model.dim, model.z_dim) == (config["dim"], config["z_dim"])
    return model, tensors, weights


@pytest.fixture(scope="module")
def one_shot(fixture):
    model, tensors, _ = fixture
    return model.decode(tensors["in.z"], clamp=False)


def stream(model, z, sizes, **kwargs):
    """Decode z in chunks of the given sizes with the cache kept: (videos, caches)."""
    videos, caches, cache, start = [], [], None, 0
    for n in sizes:
        video, cache = model.decode_chunk(z[:, :, start : start + n], cache, **kwargs)
        videos.append(video)
        caches.append(cache)
        start += n
    return videos, caches


def checksum(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().view(torch.uint8).numpy()).hexdigest()


# --- parity --------------------------------------------------------------------------------------


def test_fixture_one_shot_matches_official(fixture, one_shot):
    _, tensors, _ = fixture
    expected = tensors["out.video_unclamped"]
    assert one_shot.shape == expected.shape == (1, 3, 25, 48, 80)
    assert max_err(one_shot, expected) <= TOL


@pytest.mark.parametrize("sizes", CHUNKINGS, ids=lambda s: "-".join(map(str, s)))
def test_streamed_chunks_equal_one_shot(fixture, one_shot, sizes):
    model, tensors, _ = fixture
    videos, caches = stream(model, tensors["in.z"], sizes, clamp=False)
    assert [v.shape[2] for v in videos] == [video_frames(sizes[0], True)] + [
        video_frames(n, False) for n in sizes[1:]
    ]
    assert torch.equal(torch.cat(videos, dim=2), one_shot)  # the same computation, bit for bit
    assert [c.latent_frames for c in caches] == [sum(sizes[: i + 1]) for i in range(len(sizes))]


def test_frames_per_latent_are_1_then_4(fixture):
    model, tensors, _ = fixture
    videos, _ = stream(model, tensors["in.z"], [1] * 7)
    assert [v.shape[2] for v in videos] == [1, 4, 4, 4, 4, 4, 4]
    assert video_frames(3, first=True) == 9 and video_frames(3, first=False) == 12


def test_clamped_output_is_mapped_to_unit_range(fixture, one_shot):
    model, tensors, _ = fixture
    video = model.decode(tensors["in.z"])
    assert video.dtype == torch.float32 and 0.0 <= video.min() and video.max() <= 1.0
    assert torch.equal(video, (one_shot.clamp(-1, 1) + 1) / 2)


def test_raw_latents_flag(fixture, one_shot):
    model, tensors, _ = fixture
    raw = model.denormalise(tensors["in.z"])
    assert max_err(model.decode(raw, normalised=False, clamp=False), one_shot) <= 1e-6


def test_zero_filled_cache_is_not_equivalent(fixture, one_shot):
    """Self-Forcing's demo pre-fills the cache with zeros: that skips the first-frame "Rep" step
    and gives different (and more) frames."""
    model, tensors, _ = fixture
    _, caches = stream(model, tensors["in.z"], [3])
    zeros = DecoderCache(tuple(torch.zeros_like(h) for h in caches[0].histories), 0)
    video, _ = model.decode_chunk(tensors["in.z"][:, :, :3], zeros, clamp=False)
    assert video.shape[2] == 12 != one_shot[:, :, :9].shape[2]
    assert max_err(video[:, :, -8:], one_shot[:, :, 1:9]) > 1e-3


@pytest.fixture(scope="module")
def diffusers_pair():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16).eval().requires_grad_(False)
    randomise_(ref, seed=3)  # the encoder too: every parameter random
    return ref, load_vae(ref.state_dict())


def test_matches_diffusers_autoencoder_kl_wan(diffusers_pair):
    """diffusers decodes *raw* latents (its pipeline de-normalises) and clamps to [-1, 1]."""
    ref, ours = diffusers_pair
    z = torch.randn(1, 16, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = ref.decode(ours.denormalise(z)).sample
    unclamped = ours.decode(z, clamp=False)
    assert (unclamped.abs() < 1).float().mean() > 0.5  # not a comparison of saturated values
    assert max_err(unclamped.clamp(-1, 1), expected) <= TOL
    assert max_err(ours.decode(z), (expected + 1) / 2) <= TOL
    streamed, _ = stream(ours, z, [3, 2], clamp=False)
    assert max_err(torch.cat(streamed, dim=2).clamp(-1, 1), expected) <= TOL


def test_diffusers_names_map_to_official():
    assert diffusers_to_official("post_quant_conv.weight") == "conv2.weight"
    assert diffusers_to_official("decoder.up_blocks.1.resnets.0.conv_shortcut.bias") == (
        "decoder.upsamples.4.shortcut.bias"
    )
    assert diffusers_to_official("decoder.up_blocks.0.upsamplers.0.time_conv.weight") == (
        "decoder.upsamples.3.time_conv.weight"
    )
    assert diffusers_to_official("decoder.mid_block.resnets.1.norm2.gamma") == (
        "decoder.middle.2.residual.3.gamma"
    )
    assert diffusers_to_official("encoder.conv_in.weight") == "encoder.conv1.weight"


# --- precision, immutability, cache --------------------------------------------------------------


def test_bf16_close_to_fp32(fixture):
    model, tensors, weights = fixture
    low = load_vae(weights, dtype="bf16")
    assert low.dtype == torch.bfloat16
    a, b = model.decode(tensors["in.z"]), low.decode(tensors["in.z"])
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() < 0.01 and max_err(a, b) < 0.1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_norm_no_worse_than_official(dtype):
    """The VAE RMSNorm on bf16 (no fp32 temporaries) and fp16 (fp32 math) input against the
    exact math on the same low-precision input: within a few roundings of it and no less
    accurate than the official formula run in that dtype (F.normalize, * scale, * gamma)."""
    import torch.nn.functional as F

    from adastate_core.vae.decoder import RMSNorm

    g = torch.Generator().manual_seed(3)
    c = 96
    norm = RMSNorm(c)
    with torch.no_grad():
        norm.gamma.copy_(torch.rand(c, 1, 1, 1, generator=g) + 0.5)
    x = (torch.randn(1, c, 3, 24, 24, generator=g) * 3 + 0.5).to(dtype)
    exact = F.normalize(x.double(), dim=1) * norm.scale * norm.gamma.double()
    with torch.no_grad():
        out = norm(x)
        official = F.normalize(x, dim=1) * norm.scale * norm.gamma.to(dtype)
        zero = norm(torch.zeros(1, c, 1, 2, 2, dtype=dtype))
    assert out.dtype == dtype and torch.equal(zero, torch.zeros_like(zero))  # not NaN

    def rms_rel(y):
        return ((y.double() - exact).square().mean() / exact.square().mean()).sqrt().item()

    ulp = torch.finfo(dtype).eps
    assert rms_rel(out) <= 1.05 * rms_rel(official)
    assert rms_rel(out) < 2 * ulp
    assert ((out.double() - exact).abs() <= 4 * ulp * exact.abs() + 1e-6).all()


def test_decode_chunk_modifies_nothing_it_is_given(fixture):
    model, tensors, _ = fixture
    z = tensors["in.z"].clone()
    _, cache = model.decode_chunk(z[:, :, :2])
    z_sum, cache_sums = checksum(z), [checksum(h) for h in cache.histories]
    ptrs = {h.data_ptr() for h in cache.histories if h.numel()}
    video, new = model.decode_chunk(z[:, :, 2:5], cache)
    assert checksum(z) == z_sum and [checksum(h) for h in cache.histories] == cache_sums
    assert cache.latent_frames == 2 and new.latent_frames == 5
    assert not ptrs & {h.data_ptr() for h in new.histories if h.numel()}
    again, _ = model.decode_chunk(z[:, :, 2:5], cache)  # the old cache is still a valid value
    assert torch.equal(again, video)
    with pytest.raises(AttributeError):
        cache.latent_frames = 0  # frozen


def test_cache_size_and_estimate(fixture):
    model, tensors, _ = fixture
    _, caches = stream(model, tensors["in.z"], [1, 1, 1])
    histories = caches[0].histories
    assert len(histories) == 32
    assert sum(h.shape[2] == 0 for h in histories) == 2  # the two time convs: "Rep"
    assert caches[-1].nbytes() == estimate_cache_bytes(48, 80, torch.float32, dim=8)
    moved = caches[-1].to("cpu")
    assert moved is not caches[-1] and moved.nbytes() == caches[-1].nbytes()
    full = estimate_cache_bytes(480, 832, torch.bfloat16)  # REFERENCE.md §3: 0.94 G elements
    assert 0.93e9 < full / 2 < 0.95e9


def test_cache_of_another_video_size_is_refused(fixture):
    model, tensors, _ = fixture
    _, cache = model.decode_chunk(tensors["in.z"][:, :, :1])
    with pytest.raises(ValueError, match="cache=None"):
        model.decode_chunk(torch.zeros(1, 16, 1, 4, 4), cache)
    with pytest.raises(ValueError, match="latents"):
        model.decode_chunk(torch.zeros(1, 4, 1, 6, 10))


# --- file formats --------------------------------------------------------------------------------


def _with_encoder(weights: dict) -> dict:
    """A full VAE file: encoder and conv1 tensors beside the decoder (ignored by the loader)."""
    extra = {
        "encoder.conv1.weight": torch.randn(8, 3, 3, 3, 3),
        "conv1.weight": torch.randn(32, 32, 1, 1, 1),
    }
    return {**weights, **extra}


def _same(model: WanVAEDecoder, weights: dict) -> None:
    sd = model.state_dict()
    assert set(sd) == set(weights)
    assert all(torch.equal(sd[k], weights[k]) for k in weights)


def test_every_format_loads_identical_tensors(tmp_path, fixture, diffusers_pair):
    _, _, weights = fixture
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(_with_encoder(weights), str(path))
    _same(load_vae(path), weights)
    assert "safetensors" in load_vae(path).checkpoint_format
    for name, obj in (
        ("Wan2.1_VAE.pth", _with_encoder(weights)),
        ("wrapped.pth", {"state_dict": weights}),
    ):
        torch.save(obj, tmp_path / name)
        _same(load_vae(tmp_path / name), weights)

    ref, ours = diffusers_pair
    ref.save_pretrained(tmp_path / "pipeline" / "vae")
    expected = ours.state_dict()
    for source in (
        tmp_path / "pipeline",
        tmp_path / "pipeline" / "vae",
        tmp_path / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors",
    ):
        loaded = load_vae(source)
        assert loaded.checkpoint_format.startswith("diffusers")
        _same(loaded, expected)


def test_any_base_dim_is_read_from_shapes():
    model = load_vae(random_state_dict(dim=16, seed=1))
    assert (model.dim, model.z_dim) == (16, 16)
    assert model.decode(torch.zeros(1, 16, 2, 2, 3)).shape == (1, 3, 5, 16, 24)


def test_load_dtype_and_reading_on_meta(fixture):
    _, _, weights = fixture
    ckpt = read_vae_checkpoint(weights)
    assert (ckpt.dim, ckpt.z_dim) == (8, 16) and len(ckpt.names) == len(weights)
    model = load_vae(weights, dtype=torch.float16)
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# --- files that are not the Wan2.1 VAE -----------------------------------------------------------


def _bad_files(weights: dict) -> dict[str, tuple[dict, str]]:
    e = lambda *shape: torch.zeros(shape)
    dit = {"model.diffusion_model." + k: v for k, v in random_dit_state_dict(TINY).items()}
    wan22 = {
        "conv2.weight": e(48, 48, 1, 1, 1),
        "decoder.conv1.weight": e(1024, 48, 3, 3, 3),
        "decoder.head.0.gamma": e(256, 1, 1, 1),
    }
    sd_vae = {
        "decoder.conv_in.weight": e(512, 4, 3, 3),
        "decoder.mid.block_1.norm1.weight": e(512),
        "decoder.up.0.block.0.conv1.weight": e(128, 256, 3, 3),
        "post_quant_conv.weight": e(4, 4, 1, 1),
    }
    flux_diffusers = {
        "decoder.conv_in.weight": e(512, 16, 3, 3),
        "decoder.up_blocks.0.resnets.0.norm1.weight": e(512),
        "decoder.conv_norm_out.weight": e(128),
    }
    missing = {k: v for k, v in weights.items() if k != "decoder.upsamples.5.residual.2.weight"}
    return {
        "dit": (dit, "Wan DiT.*models/diffusion_models"),
        "diffusers_dit": ({"condition_embedder.time_proj.weight": e(4, 4)}, "Wan DiT"),
        "wan22": (wan22, "Wan2.2 VAE.*wan_2.1_vae.safetensors"),
        "sd_vae": (sd_vae, "not a Wan one.*wan_2.1_vae.safetensors"),
        "flux_vae": (flux_diffusers, "not a Wan one"),
        "umt5": (
            {"shared.weight": e(8, 4), "encoder.block.0.layer.0.SelfAttention.q.weight": e(4, 4)},
            "text encoder.*models/text_encoders",
        ),
        "clip": ({"text_model.embeddings.token_embedding.weight": e(8, 4)}, "text encoder"),
        "missing": (missing, "1 missing tensor.*upsamples.5.residual.2.weight"),
        "no_conv2": (
            {k: v for k, v in weights.items() if k.startswith("decoder.")},
            "missing tensor.*conv2.weight",
        ),
        "unknown": ({"foo.weight": e(2)}, "not a Wan2.1 VAE"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "dit",
        "diffusers_dit",
        "wan22",
        "sd_vae",
        "flux_vae",
        "umt5",
        "clip",
        "missing",
        "no_conv2",
        "unknown",
    ],
)
def test_refused_with_message(tmp_path, fixture, case):
    tensors, pattern = _bad_files(fixture[2])[case]
    path = tmp_path / f"{case}.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=pattern):
        load_vae(path)


def test_truncated_corrupt_and_missing_files(tmp_path, fixture):
    weights = fixture[2]
    good = tmp_path / "good.safetensors"
    save_file(weights, str(good))
    data = good.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.safetensors").write_bytes(b"")
    torch.save(weights, tmp_path / "good.pth")
    pth = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(pth[: len(pth) // 2])
    for name in ("truncated.safetensors", "empty.safetensors", "truncated.pth"):
        with pytest.raises(CheckpointError, match=r"truncated or corrupt|is empty \(0 bytes\)"):
            load_vae(tmp_path / name)
    with pytest.raises(CheckpointError, match="not found"):
        load_vae(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="exactly one"):
        load_vae(tmp_path)  # a folder with several files


# --- benchmark harness ---------------------------------------------------------------------------


def test_decode_benchmark_harness_runs():
    pytest.importorskip("diffusers")
    ours, ref = decode_bench.build_pair(dim=8)
    z = ours.denormalise(torch.randn(1, 16, 4, 2, 3))
    r = decode_bench.compare(ours, ref, z, repeats=1, warmup=0)
    assert r["ms_ours"] > 0 and r["ms_ref"] > 0 and r["max_err"] <= TOL
    s = decode_bench.stream_speed(8, 16, 24, chunks=2, dtype=torch.float32, device="cpu")
    assert s["frames"] == [9, 12] and s["fps"] > 0
    assert s["cache_gb"] == pytest.approx(s["cache_estimate_gb"])
