"""Wan2.1 VAE encoder: parity with the official encode (golden fixture) and diffusers'
AutoencoderKLWan.encode, any streamed grouping equal to one-shot bit for bit, the cache a
value, loading from every VAE format, and the errors users can hit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from adastate_core.errors import CheckpointError
from adastate_core.vae import EncoderCache, latent_frames, load_vae, load_vae_encoder
from adastate_core.vae.formats import diffusers_to_official
from adastate_core.vae.random_weights import random_state_dict, randomise_

from conftest import TOL, load_fixture, max_err


@pytest.fixture(scope="module")
def fixture():
    tensors, meta = load_fixture("wan_vae_tiny_encoder.safetensors")
    config = json.loads(meta["config"])
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    model = load_vae_encoder(weights)
    assert (model.dim, model.z_dim) == (config["dim"], config["z_dim"])
    return model, tensors, weights


def test_video_matches_official(fixture):
    model, fx, _ = fixture
    mu = model.encode(fx["in.video"])
    assert mu.shape == fx["out.mu"].shape == (1, 16, 4, 6, 10)
    assert max_err(mu, fx["out.mu"]) <= TOL


def test_image_matches_official(fixture):
    model, fx, _ = fixture
    assert max_err(model.encode(fx["in.image"]), fx["out.image_mu"]) <= TOL


@pytest.mark.parametrize("groups", [[1, 4, 4, 4], [5, 8], [1, 12], [9, 4], [13]])
def test_any_grouping_equals_one_shot(fixture, groups):
    model, fx, _ = fixture
    video = fx["in.video"]
    one_shot = model.encode(video)
    outs, cache, start = [], None, 0
    for n in groups:
        lat, cache = model.encode_chunk(video[:, :, start : start + n], cache)
        assert lat.shape[2] == latent_frames(n, start == 0)
        outs.append(lat)
        start += n
    assert torch.equal(torch.cat(outs, dim=2), one_shot)
    assert cache.video_frames == 13 and cache.latent_frames == 4


def test_encode_chunk_modifies_nothing_it_is_given(fixture):
    model, fx, _ = fixture
    video = fx["in.video"].clone()
    _, cache = model.encode_chunk(video[:, :, :5])
    before = [h.clone() for h in cache.histories]
    a, new = model.encode_chunk(video[:, :, 5:9], cache)
    b, _ = model.encode_chunk(video[:, :, 5:9], cache)  # the old cache is still valid
    assert torch.equal(a, b) and torch.equal(video, fx["in.video"])
    assert all(torch.equal(x, y) for x, y in zip(before, cache.histories))
    assert isinstance(new, EncoderCache) and new.video_frames == 9


def test_raw_means_and_normalisation(fixture):
    from adastate_core.vae import LATENT_MEAN, LATENT_STD

    model, fx, _ = fixture
    raw = model.encode(fx["in.image"], normalise=False)
    mean = torch.tensor(LATENT_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(LATENT_STD).view(1, -1, 1, 1, 1)
    assert max_err((raw - mean) / std, fx["out.image_mu"]) <= TOL


def test_encode_then_decode_round_trip_shapes(fixture):
    """Encoder and decoder of one VAE file agree on frame counts: 1 + 4k <-> 1 + k."""
    weights = random_state_dict(dim=8, seed=4, encoder=True)
    enc, dec = load_vae_encoder(weights), load_vae(weights)
    video = torch.rand(1, 3, 9, 32, 48) * 2 - 1
    z = enc.encode(video)
    assert z.shape == (1, 16, 3, 4, 6)
    assert dec.decode(z).shape == (1, 3, 9, 32, 48)


@pytest.fixture(scope="module")
def diffusers_pair():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.AutoencoderKLWan(base_dim=8, z_dim=16).eval().requires_grad_(False)
    randomise_(ref, seed=5)
    return ref, load_vae_encoder(ref.state_dict())


def test_matches_diffusers_encode(diffusers_pair):
    """diffusers returns the raw posterior mean (its pipelines normalise)."""
    ref, ours = diffusers_pair
    video = torch.rand(1, 3, 9, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = ref.encode(video).latent_dist.mean
    assert max_err(ours.encode(video, normalise=False), expected) <= TOL


def test_diffusers_encoder_names_map_to_official():
    assert diffusers_to_official("quant_conv.weight") == "conv1.weight"
    assert diffusers_to_official("post_quant_conv.weight") == "conv2.weight"
    assert diffusers_to_official("encoder.conv_in.weight") == "encoder.conv1.weight"
    assert diffusers_to_official("encoder.down_blocks.3.conv_shortcut.bias") == (
        "encoder.downsamples.3.shortcut.bias"
    )
    assert diffusers_to_official("encoder.down_blocks.5.time_conv.weight") == (
        "encoder.downsamples.5.time_conv.weight"
    )
    assert diffusers_to_official("encoder.mid_block.attentions.0.to_qkv.weight") == (
        "encoder.middle.1.to_qkv.weight"
    )
    assert diffusers_to_official("encoder.norm_out.gamma") == "encoder.head.0.gamma"


def test_every_format_loads_the_same_encoder(tmp_path, fixture):
    model, fx, weights = fixture
    full = {**random_state_dict(dim=8, seed=1), **weights}  # a whole VAE file
    path = tmp_path / "wan_2.1_vae.safetensors"
    save_file(full, str(path))
    pth = tmp_path / "Wan2.1_VAE.pth"
    torch.save({"state_dict": full}, pth)
    for source in (path, pth, {"first_stage_model." + k: v for k, v in full.items()}):
        loaded = load_vae_encoder(source)
        assert torch.equal(loaded.encode(fx["in.image"]), model.encode(fx["in.image"]))


def test_decoder_only_file_is_refused_with_a_message(tmp_path):
    path = tmp_path / "decoder_only.safetensors"
    save_file(random_state_dict(dim=8), str(path))
    with pytest.raises(CheckpointError, match="no Wan2.1 VAE encoder weights"):
        load_vae_encoder(path)
    with pytest.raises(CheckpointError, match="DiT"):
        from adastate_core.model.random_weights import TINY
        from adastate_core.model.random_weights import random_state_dict as dit_sd

        load_vae_encoder(dit_sd(TINY))


@pytest.mark.parametrize(
    "shape, cached, words",
    [
        ((1, 3, 4, 32, 48), False, "1 \\+ 4k"),
        ((1, 3, 5, 30, 48), False, "multiples of 8"),
        ((1, 4, 5, 32, 48), False, "expected video"),
        ((1, 3, 3, 32, 48), True, "multiples of 4"),
        ((1, 3, 4, 40, 48), True, "continues video"),
    ],
)
def test_bad_input(fixture, shape, cached, words):
    model, _, _ = fixture
    cache = model.encode_chunk(torch.zeros(1, 3, 1, 32, 48))[1] if cached else None
    with pytest.raises(ValueError, match=words):
        model.encode_chunk(torch.zeros(shape), cache)
