"""The DiT against golden outputs of the official Wan2.1 / Self-Forcing code (fp32)."""

from __future__ import annotations

import json

import torch

from conftest import TOL, load_fixture, max_err


def test_full_attention_matches_official(dit_fixture):
    model, fx = dit_fixture
    with torch.no_grad():
        out = model(fx["in.x"], fx["in.t"], fx["in.context"])
    assert out.shape == fx["out.bidirectional"].shape
    assert max_err(out, fx["out.bidirectional"]) <= TOL


def test_kv_cached_chunks_match_block_causal_mask(dit_fixture):
    """3 chunks of 2 frames, each attending to the cached K/V of earlier chunks plus itself."""
    model, fx = dit_fixture
    x, t, ctx = fx["in.x"], fx["in.t"], model.encode_context(fx["in.context"])
    outs, cache = [], []
    with torch.no_grad():
        for b in range(3):
            out, kv = model(x[:, :, 2 * b : 2 * b + 2], t, ctx, cache=cache, return_kv=True)
            outs.append(out)
            cache.append(kv)
    assert [seg.positions.tolist() for seg in cache] == [[0, 1], [2, 3], [4, 5]]
    assert max_err(torch.cat(outs, dim=2), fx["out.block_causal_fpb2"]) <= TOL


def test_self_forcing_rollout_matches_every_step(dit_fixture):
    """Per-block timestep schedules; t = 0 cache-write pass of each block before the next."""
    model, fx = dit_fixture
    roll, meta = load_fixture("wan_dit_tiny_causal_rollout.safetensors")
    schedule = json.loads(meta["schedule"])
    ctx = model.encode_context(roll["in.context"])
    cache, checked = [], 0
    with torch.no_grad():
        for b, steps in enumerate(schedule):
            pos = [2 * b, 2 * b + 1]
            for j, t_expected in enumerate(steps):
                t = roll[f"block{b}.step{j}.t"]
                assert torch.allclose(t, torch.tensor(t_expected).expand_as(t))
                out = model(roll[f"block{b}.step{j}.x"], t, ctx, positions=pos, cache=cache)
                err = max_err(out, roll[f"block{b}.step{j}.out"])
                assert err <= TOL, f"block {b} step {j}: {err}"
                checked += 1
            cache.append(
                model.cache_kv(roll[f"block{b}.context_x"], ctx, positions=pos, cache=cache)
            )
    assert checked == 6


def test_official_forward_from_raw_context_equals_precomputed(dit_fixture):
    model, fx = dit_fixture
    with torch.no_grad():
        a = model(fx["in.x"], fx["in.t"], fx["in.context"])
        b = model(fx["in.x"], fx["in.t"], model.encode_context(fx["in.context"]))
    assert torch.equal(a, b)


def test_block_causal_mask_in_one_call_matches_official(dit_fixture):
    """The same fixture through a frame-level mask in a single whole-sequence call."""
    model, fx = dit_fixture
    blocks = torch.arange(6) // 2
    mask = blocks[:, None] >= blocks[None, :]
    with torch.no_grad():
        out = model(fx["in.x"], fx["in.t"], fx["in.context"], attn_mask=mask)
    assert max_err(out, fx["out.block_causal_fpb2"]) <= TOL
