"""Priming a stream with clean latents: the next chunk is bit for bit what the stream makes
after generating those latents itself, for every policy; a remainder is kept exactly as the
next chunk's first frames; the state persists; bad input is refused."""

from __future__ import annotations

import pytest
import torch

from adastate_core.stream import (
    POLICIES,
    StreamConfig,
    StreamError,
    denoise_chunk,
    init_stream,
    load_stream,
    prime,
    save_stream,
    stream_chunks,
    update_state,
)

from conftest import tiny_model

CFG = dict(height=32, width=48, seed=11)


@pytest.fixture(scope="module")
def model():
    return tiny_model(3)


def cond(model, seed=0):
    return torch.randn(1, 6, model.config.text_dim, generator=torch.Generator().manual_seed(seed))


def run(model, policy, chunks):
    scfg = StreamConfig(policy=policy, **CFG)
    with torch.no_grad():
        steps = list(stream_chunks(model, init_stream(model, cond(model), scfg), chunks=chunks))
    return scfg, [s.chunk for s in steps]


@pytest.mark.parametrize("policy", POLICIES)
def test_primed_stream_continues_bit_for_bit(model, policy):
    """Latents (and states) of chunks 0..3 of a run, primed into a new stream: chunks 4 and 5
    equal the run's."""
    scfg, chunks = run(model, policy, 6)
    m = 4
    latents = torch.cat([c.content for c in chunks[:m]], dim=2)
    states = [c.state for c in chunks[:m]]
    stream = prime(model, init_stream(model, cond(model), scfg), latents, states=states)
    assert stream.chunk_index == m and stream.lead is None
    for k in (m, m + 1):
        chunk = denoise_chunk(model, stream)
        assert torch.equal(chunk.content, chunks[k].content), (policy, k)
        if chunks[k].state is not None:
            assert torch.equal(chunk.state, chunks[k].state)
        stream = update_state(model, stream, chunk)


@pytest.mark.parametrize("policy", ["static", "ema", "none"])
def test_policies_without_a_live_state_need_no_states(model, policy):
    scfg, chunks = run(model, policy, 5)
    latents = torch.cat([c.content for c in chunks[:4]], dim=2)
    stream = prime(model, init_stream(model, cond(model), scfg), latents)
    assert torch.equal(denoise_chunk(model, stream).content, chunks[4].content)


def test_adaptive_without_states_keeps_s0_until_generation(model):
    """Without the prefix's state latents the state slot holds s_0 (the first prefix frame's
    K/V, as after chunk 0) until the first generated steady chunk overwrites it."""
    scfg, chunks = run(model, "adaptive", 4)
    latents = torch.cat([c.content for c in chunks], dim=2)
    fresh = init_stream(model, cond(model), scfg)
    after0 = update_state(model, fresh, denoise_chunk(model, fresh))
    primed = prime(model, fresh, latents)
    assert primed.chunk_index == 4
    assert torch.equal(primed.anchor.k, after0.anchor.k)
    chunk = denoise_chunk(model, primed)
    assert chunk.steady and torch.isfinite(chunk.content).all()
    moved = update_state(model, primed, chunk)
    assert not torch.equal(moved.anchor.k, after0.anchor.k)  # the generated state took over


@pytest.mark.parametrize("extra", [1, 2])
def test_remainder_is_the_next_chunks_exact_first_frames(model, extra):
    scfg, chunks = run(model, "adaptive", 3)
    latents = torch.cat([c.content for c in chunks[:2]] + [chunks[2].content[:, :, :extra]], 2)
    stream = prime(model, init_stream(model, cond(model), scfg), latents)
    assert stream.chunk_index == 2 and stream.lead.shape[2] == extra
    chunk = denoise_chunk(model, stream)
    assert torch.equal(chunk.content[:, :, :extra], chunks[2].content[:, :, :extra])
    assert torch.isfinite(chunk.content).all()
    after = update_state(model, stream, chunk)
    assert after.lead is None and after.chunk_index == 3


def test_single_image_is_the_first_frame_of_chunk0(model):
    scfg = StreamConfig(**CFG)
    image = torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(5))
    stream = prime(model, init_stream(model, cond(model), scfg), image)
    assert stream.chunk_index == 0
    chunk = denoise_chunk(model, stream)
    assert torch.equal(chunk.content[:, :, :1], image)
    plain = denoise_chunk(model, init_stream(model, cond(model), scfg))
    assert not torch.equal(chunk.content[:, :, 1:], plain.content[:, :, 1:])  # it conditions


def test_lead_survives_save_and_load(model, tmp_path):
    scfg = StreamConfig(**CFG)
    image = torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(5))
    stream = prime(model, init_stream(model, cond(model), scfg), image)
    path = save_stream(stream, tmp_path / "primed.safetensors")
    back = load_stream(model, path)
    assert torch.equal(back.lead, stream.lead)
    assert torch.equal(denoise_chunk(model, back).content, denoise_chunk(model, stream).content)


def test_bad_input(model):
    scfg = StreamConfig(**CFG)
    fresh = init_stream(model, cond(model), scfg)
    good = torch.zeros(1, 16, 3, 4, 6)
    with pytest.raises(StreamError, match="latents have shape"):
        prime(model, fresh, torch.zeros(1, 16, 3, 8, 6))
    with pytest.raises(StreamError, match="no latent frames"):
        prime(model, fresh, torch.zeros(1, 16, 0, 4, 6))
    with pytest.raises(StreamError, match="NaN"):
        prime(model, fresh, torch.full((1, 16, 3, 4, 6), float("nan")))
    with pytest.raises(StreamError, match="prefix states"):
        prime(model, fresh, good, states=[None, None])
    primed = prime(model, fresh, good)
    with pytest.raises(StreamError, match="prime a new stream"):
        prime(model, primed, good)
