"""The streaming engine on tiny random-weight models (DESIGN.md §2)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from adastate_core.model.random_weights import TINY
from adastate_core.stream import (
    CachedFrames,
    ChunkNoise,
    PromptSchedule,
    SigmaSchedule,
    StreamConfig,
    StreamConfigError,
    StreamError,
    denoise_chunk,
    draw_noise,
    init_stream,
    load_stream,
    renoise,
    save_stream,
    set_prompt,
    stream_chunks,
    update_state,
    window_layout,
    x0_from_velocity,
)

from conftest import TOL, load_fixture, max_err, tiny_model

SIZE = {"height": 64, "width": 96}  # latent 8 x 12, 24 tokens per frame


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


def cond(seed: int = 0, rows: int = 5, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(batch, rows, TINY.text_dim, generator=g)


def run(model, cfg, n, conditioning=None, prompts=None):
    stream = init_stream(model, cond() if conditioning is None else conditioning, cfg)
    steps = list(stream_chunks(model, stream, chunks=n, prompts=prompts))
    return [s.chunk for s in steps], [s.stream for s in steps], stream


# --- schedule ------------------------------------------------------------------------------------


def test_sigma_schedule_is_self_forcing_warp():
    sched = SigmaSchedule((1000, 750, 500, 250), shift=5.0)
    assert sched.timesteps == pytest.approx([1000, 937.5, 833.3333, 625], abs=1e-3)
    _, meta = load_fixture("wan_dit_tiny_causal_rollout.safetensors")
    import json

    used = {t for block in json.loads(meta["schedule"]) for t in block}
    assert used <= set(sched.timesteps)  # bit-identical float32 values to Self-Forcing's
    other = SigmaSchedule((1000, 500), shift=3.0)
    assert other.sigmas[1] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5), abs=1e-7)


def test_x0_and_renoise_math():
    x, v, eps = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    x0 = x0_from_velocity(x, v, 0.625)
    assert torch.allclose(x0, x - 0.625 * v)
    assert torch.allclose(renoise(x0, eps, 0.25), 0.75 * x0 + 0.25 * eps)


# --- window layout and start-up ------------------------------------------------------------------


def test_window_layout_follows_the_design_table(model):
    cfg = StreamConfig(**SIZE)
    _, states, s0 = run(model, cfg, 3)
    assert window_layout(s0).live_positions == [0, 1, 2]  # chunk 0: live content only
    l1 = window_layout(states[0])  # chunk 1: 3 cached + 3 live, no state (3*1 > 3 is false)
    assert not l1.steady and [s.positions.tolist() for s in l1.segments] == [[0, 1, 2]]
    assert l1.live_positions == [3, 4, 5]
    l2 = window_layout(states[1])  # steady: anchor 0 | state 1 | cached 2..4 | live 5..7
    assert l2.steady
    assert [s.positions.tolist() for s in l2.segments] == [[0], [2, 3, 4]]
    assert l2.state_positions == (1,) and l2.content_positions == (5, 6, 7)
    assert window_layout(states[2]).live_positions == [1, 5, 6, 7]  # time-invariant


def _mask_rolling(n_frames: int, chunk: int, window: int) -> torch.Tensor:
    f = torch.arange(n_frames)
    c = f // chunk
    q_start = c * chunk
    keys = f[None, :]
    return (keys < (c[:, None] + 1) * chunk) & (keys >= q_start[:, None] - window)


def reference_rolling(model, conditioning, cfg, noises):
    """Self-Forcing with rolling local attention over W + C frames, computed without any
    KV cache: every step runs the whole sequence (clean past frames at t = 0, the noisy chunk
    at t) with a frame mask where chunk j sees the W frames before it and itself."""
    sched, clean = cfg.schedule, []
    for noise in noises:
        x = noise.content
        for i, (sigma, t) in enumerate(zip(sched.sigmas, sched.timesteps)):
            seq = torch.cat([*clean, x], dim=2)
            n = seq.shape[2]
            tt = torch.zeros(1, n)
            tt[:, -cfg.chunk :] = t
            with torch.no_grad():
                v = model(seq, tt, conditioning, attn_mask=_mask_rolling(n, cfg.chunk, cfg.window))
            x0 = x0_from_velocity(x, v[:, :, -cfg.chunk :], sigma)
            if i + 1 < len(sched.sigmas):
                x = renoise(x0, noise.renoise[i], sched.sigmas[i + 1])
        clean.append(x0)
    return clean


@pytest.mark.parametrize("window,chunk", [(3, 3), (2, 3), (4, 2), (0, 2)])
def test_none_policy_equals_rolling_local_attention(model, window, chunk):
    cfg = StreamConfig(**SIZE, policy="none", window=window, chunk=chunk, seed=5)
    c = cond()
    stream = init_stream(model, c, cfg)
    outs, noises = [], []
    for _ in range(5):
        noise = draw_noise(stream)
        chunk_out = denoise_chunk(model, stream, noise)
        stream = update_state(model, stream, chunk_out)
        outs.append(chunk_out.content)
        noises.append(noise)
    ref = reference_rolling(model, c, cfg, noises)
    for k, (a, b) in enumerate(zip(outs, ref)):
        assert max_err(a, b) <= TOL, f"chunk {k}: {max_err(a, b)}"


@pytest.mark.parametrize("policy", ["adaptive", "static", "ema", "adaptive+sink"])
def test_every_policy_equals_none_before_eviction_bit_for_bit(model, policy):
    base = dict(**SIZE, window=6, chunk=3, seed=11, anchor_frames=2)
    ref, ref_states, _ = run(model, StreamConfig(**base, policy="none"), 3)
    got, states, _ = run(model, StreamConfig(**base, policy=policy), 3)
    for k in range(3):  # chunks 0, 1, 2: k*3 <= 6, nothing evicted yet
        assert torch.equal(got[k].content, ref[k].content) and got[k].state is None
        assert torch.equal(states[k].window.k, ref_states[k].window.k)
    more, _, _ = run(model, StreamConfig(**base, policy=policy), 4)
    assert more[3].steady and (more[3].state is not None) == (
        policy in ("adaptive", "adaptive+sink")
    )


# --- steady state --------------------------------------------------------------------------------


def test_time_invariance_chunk_3_vs_chunk_300(model):
    """A steady-state chunk is a pure function of (cached contents, noise, prompt)."""
    cfg = StreamConfig(**SIZE, seed=2)
    _, states, _ = run(model, cfg, 3)
    at3 = states[2]
    at300 = dataclasses.replace(at3, chunk_index=300)
    noise = draw_noise(at3)
    a = denoise_chunk(model, at3, noise)
    b = denoise_chunk(model, at300, noise)
    assert torch.equal(a.content, b.content) and torch.equal(a.state, b.state)
    na, nb = update_state(model, at3, a), update_state(model, at300, b)
    assert torch.equal(na.window.k, nb.window.k) and torch.equal(na.anchor.k, nb.anchor.k)
    assert window_layout(at3).live_positions == window_layout(at300).live_positions


@pytest.mark.parametrize("policy", ["adaptive", "static", "ema", "none", "adaptive+sink"])
def test_flat_memory_chunk_5_vs_chunk_200(model, policy):
    cfg = StreamConfig(height=32, width=32, policy=policy, steps=(1000, 500), seed=1)
    stream = init_stream(model, cond(), cfg)
    sizes = {}
    for step in stream_chunks(model, stream, chunks=200):
        sizes[step.stream.chunk_index] = step.stream.nbytes()
    assert sizes[5] == sizes[200]
    assert len(set(list(sizes.values())[2:])) == 1


def test_adaptive_anchor_is_overwritten_every_steady_chunk(model):
    cfg = StreamConfig(**SIZE, seed=4)
    chunks, states, _ = run(model, cfg, 7)
    assert torch.equal(states[0].anchor.latent, chunks[0].content[:, :, :1])  # s_0
    anchors = [s.anchor.k for s in states]
    for k in range(2, 7):  # steady chunks: the clean state K/V overwrite the slot
        assert chunks[k].steady and chunks[k].state is not None
        assert not torch.equal(anchors[k], anchors[k - 1])
        assert torch.equal(states[k].anchor.latent, chunks[k].state)
    assert torch.equal(anchors[0], anchors[1])  # start-up: s_0 kept


def test_static_anchor_never_changes(model):
    cfg = StreamConfig(**SIZE, policy="static", anchor_frames=2, seed=4)
    chunks, states, _ = run(model, cfg, 6)
    digest = {hashlib.sha256(s.anchor.k.numpy().tobytes()).hexdigest() for s in states}
    assert len(digest) == 1
    assert torch.equal(states[-1].anchor.latent, chunks[0].content[:, :, :2])


def test_ema_anchor_follows_its_formula(model):
    cfg = StreamConfig(**SIZE, policy="ema", anchor_frames=1, ema_alpha=0.9, seed=4)
    chunks, states, s0 = run(model, cfg, 5)
    alpha = 0.9
    expect_k = states[0].window.k[:, :, :1].float()  # initialised from chunk 0's first frame
    assert torch.equal(states[0].anchor.k, expect_k)
    for k in range(1, 5):
        before = states[k - 1]
        n_old = before.window.num_frames
        evict = max(0, n_old + cfg.chunk - cfg.window)
        evicted_k = before.window.k[:, :, :evict]  # here W = C: the whole old window goes
        for f in range(evicted_k.shape[2]):
            expect_k = alpha * expect_k + (1 - alpha) * evicted_k[:, :, f : f + 1].float()
        assert max_err(states[k].anchor.k, expect_k) <= 1e-6
    assert states[-1].anchor.k.dtype == torch.float32


# --- determinism, save / resume -------------------------------------------------------------------


def test_same_seed_same_latents_granular_iterator_and_resume(model, tmp_path):
    cfg = StreamConfig(**SIZE, seed=123)
    a, _, _ = run(model, cfg, 6)
    b, _, _ = run(model, cfg, 6)
    stream = init_stream(model, cond(), cfg)
    granular = []
    for _ in range(6):
        chunk = denoise_chunk(model, stream)
        stream = update_state(model, stream, chunk)
        granular.append(chunk)
    # stop after chunk 3, save, resume in a "new process" (a fresh model object)
    stream = init_stream(model, cond(), cfg)
    first = list(stream_chunks(model, stream, chunks=3))
    path = save_stream(first[-1].stream, tmp_path / "stream.safetensors")
    fresh = tiny_model(seed=3)
    resumed = load_stream(fresh, path)
    rest = list(stream_chunks(fresh, resumed, chunks=6))
    resumed_chunks = [s.chunk for s in first] + [s.chunk for s in rest]
    assert [c.index for c in resumed_chunks] == list(range(6))
    for x, y, z, w in zip(a, b, granular, resumed_chunks):
        assert torch.equal(x.content, y.content) and torch.equal(x.content, z.content)
        assert torch.equal(x.content, w.content)
        assert (x.state is None and w.state is None) or torch.equal(x.state, w.state)
    other, _, _ = run(model, dataclasses.replace(cfg, seed=124), 1)
    assert not torch.equal(other[0].content, a[0].content)


def test_explicit_noise_reproduces_drawn_noise(model):
    cfg = StreamConfig(**SIZE, seed=9)
    _, states, _ = run(model, cfg, 2)
    stream = states[1]
    noise = draw_noise(stream)
    mine = ChunkNoise(
        noise.content.clone(), noise.state.clone(), tuple(r.clone() for r in noise.renoise)
    )
    assert torch.equal(
        denoise_chunk(model, stream).content, denoise_chunk(model, stream, mine).content
    )
    with pytest.raises(StreamError, match="noise.content has shape"):
        denoise_chunk(
            model, stream, dataclasses.replace(mine, content=torch.zeros(1, 16, 2, 8, 12))
        )
    with pytest.raises(StreamError, match="re-noise tensors"):
        denoise_chunk(model, stream, dataclasses.replace(mine, renoise=mine.renoise[:1]))


# --- immutability --------------------------------------------------------------------------------


def _checksums(*objs) -> list[str]:
    out = []
    for obj in objs:
        tensors = (
            list(obj.tensors())
            if hasattr(obj, "tensors")
            else [
                getattr(obj, f.name)
                for f in dataclasses.fields(obj)
                if isinstance(getattr(obj, f.name), torch.Tensor)
            ]
        )
        out += [
            hashlib.sha256(
                t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            ).hexdigest()
            for t in tensors
        ]
    return out


@pytest.mark.parametrize("policy", ["adaptive", "ema", "adaptive+sink"])
def test_operations_never_modify_their_inputs(model, policy):
    cfg = StreamConfig(**SIZE, policy=policy, seed=8)
    c = cond()
    c_sum = _checksums(type("C", (), {"tensors": lambda self: [c]})())
    stream = init_stream(model, c, cfg)
    params = [p.clone() for p in model.parameters()]
    for k in range(5):
        before = _checksums(stream)
        chunk = denoise_chunk(model, stream)
        assert _checksums(stream) == before
        chunk_sum = _checksums(chunk)
        new = update_state(model, stream, chunk)
        assert _checksums(stream) == before and _checksums(chunk) == chunk_sum
        if k == 3:
            switched = set_prompt(model, new, cond(seed=7), recache=True)
            assert switched.token != new.token
        stream = new
    assert _checksums(type("C", (), {"tensors": lambda self: [c]})()) == c_sum
    assert all(torch.equal(p, q) for p, q in zip(params, model.parameters()))


# --- prompts -------------------------------------------------------------------------------------


def test_prompt_switch_changes_only_later_chunks(model):
    cfg = StreamConfig(**SIZE, seed=21)
    a, b = cond(seed=1), cond(seed=2, rows=7)
    plain, _, _ = run(model, cfg, 6, conditioning=a)
    switched, _, _ = run(model, cfg, 6, conditioning=a, prompts=PromptSchedule(((0, a), (3, b))))
    for k in range(3):
        assert torch.equal(plain[k].content, switched[k].content)
    for k in range(3, 6):
        assert not torch.equal(plain[k].content, switched[k].content)


def test_recache_recomputes_window_under_new_prompt(model):
    cfg = StreamConfig(**SIZE, seed=21)
    a, b = cond(seed=1), cond(seed=2)
    _, states, _ = run(model, cfg, 3, conditioning=a)
    stream = states[-1]  # steady, window of 3 frames + anchor
    kept = set_prompt(model, stream, b, recache=False)
    redone = set_prompt(model, stream, b, recache=True)
    assert torch.equal(kept.window.k, stream.window.k)
    assert not torch.equal(redone.window.k, stream.window.k)
    # the recomputed K/V are the t = 0 K/V of the window latents under prompt b, attending to
    # the re-encoded anchor at position 0, read at positions 2..4
    with torch.no_grad():
        anchor = model.cache_kv(stream.anchor.latent, b, positions=[0])
        want = model.cache_kv(
            stream.window.latent,
            b,
            positions=[2, 3, 4],
            cache=[CachedFrames(anchor.k, anchor.v, None).segment([0])],
        )
    assert max_err(redone.window.k, want.k) == 0 and max_err(redone.anchor.k, anchor.k) == 0
    sched = PromptSchedule(((0, a), (3, b)), recache=True)
    outs, _, _ = run(model, cfg, 5, conditioning=a, prompts=sched)
    plain, _, _ = run(model, cfg, 5, conditioning=a, prompts=PromptSchedule(((0, a), (3, b))))
    assert torch.equal(outs[2].content, plain[2].content)
    assert not torch.equal(outs[3].content, plain[3].content)


def test_prompt_schedule_in_seconds():
    cfg = StreamConfig(**SIZE)
    c = torch.zeros(1, 1, 32)
    sched = PromptSchedule.from_seconds(cfg, [(0, c), (5, c), (10, c)])
    # chunk k starts at frame 1 + 4(3k - 1) = 12k - 3; 5 s = frame 80 -> chunk 7
    assert [k for k, _ in sched.entries] == [0, 7, 14]
    assert cfg.chunks_for_seconds(5) == 7 and cfg.frames_after(7) == 81
    with pytest.raises(StreamError, match="chunk 0"):
        PromptSchedule(((2, c),))


def test_stream_stops_by_seconds(model):
    cfg = StreamConfig(height=32, width=32, steps=(1000,))
    steps = list(stream_chunks(model, init_stream(model, cond(), cfg), seconds=2))
    assert len(steps) == cfg.chunks_for_seconds(2) == 3  # 33 frames >= 32


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"chunk": 0}, "chunk must be >= 1"),
        ({"state": 0}, "state must be between 1 and the chunk size"),
        ({"state": 4}, "state must be between 1 and the chunk size"),
        ({"window": -1}, "window must be >= 0"),
        ({"policy": "static", "anchor_frames": 0}, "anchor_frames must be between 1"),
        ({"policy": "ema", "ema_alpha": 1.0}, "ema_alpha must be in"),
        ({"policy": "sink"}, "anchor policy 'sink' is unknown"),
        ({"height": 480, "width": 830}, "width 830 must be a positive multiple of 16"),
        ({"height": 100}, "height 100 must be a positive multiple of 16"),
        ({"steps": ()}, "step list is empty"),
        ({"steps": (1000, 0)}, "steps must lie in"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(StreamConfigError, match=message):
        StreamConfig(**kwargs)


def test_bad_conditioning_and_batches(model):
    cfg = StreamConfig(**SIZE)
    with pytest.raises(StreamError, match="different text encoder"):
        init_stream(model, torch.randn(1, 5, 768), cfg)
    bad = cond()
    bad[0, 2, 3] = float("nan")
    with pytest.raises(StreamError, match="NaN or inf"):
        init_stream(model, bad, cfg)
    with pytest.raises(StreamError, match="at most 16"):
        init_stream(model, torch.randn(1, 20, 32), cfg)
    padded = torch.cat([cond(), torch.zeros(1, 11, 32)], dim=1)  # 16 rows, 11 of padding
    assert init_stream(model, padded, cfg).conditioning.shape == (1, 5, 32)
    stream = init_stream(model, cond(), cfg)
    with pytest.raises(StreamError, match="batch 2, the stream has 1"):
        set_prompt(model, stream, cond(batch=2))
    chunk = denoise_chunk(model, stream)
    later = update_state(model, stream, chunk)
    with pytest.raises(StreamError, match="another stream state"):
        update_state(model, later, chunk)


def test_resume_refuses_other_model_or_settings(model, tmp_path):
    cfg = StreamConfig(**SIZE)
    steps = list(stream_chunks(model, init_stream(model, cond(), cfg), chunks=2))
    path = save_stream(steps[-1].stream, tmp_path / "s.safetensors")
    with pytest.raises(StreamError, match="different model"):
        load_stream(tiny_model(seed=4), path)
    with pytest.raises(StreamError, match=r"window=3 \(asked 5\)"):
        load_stream(model, path, dataclasses.replace(cfg, window=5))
    with pytest.raises(StreamError, match="different model"):
        denoise_chunk(tiny_model(seed=4), steps[-1].stream)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"nope")
    with pytest.raises(StreamError, match="not a readable stream state"):
        load_stream(model, junk)
    assert load_stream(model, path, cfg).chunk_index == 2


def test_batched_stream_runs_rows_apart(model):
    cfg = StreamConfig(**SIZE, seed=3)
    both = cond(batch=2)
    chunks, states, _ = run(model, cfg, 3, conditioning=both)
    assert chunks[-1].content.shape == (2, 16, 3, 8, 12) and chunks[-1].state.shape[0] == 2
    assert not torch.equal(chunks[-1].content[0], chunks[-1].content[1])
    assert states[-1].window.k.shape[1] == 2


def test_on_step_reports_and_can_cancel(model):
    cfg = StreamConfig(**SIZE, seed=1)
    stream = init_stream(model, cond(), cfg)
    seen = []
    list(stream_chunks(model, stream, chunks=2, on_step=lambda k, i, n: seen.append((k, i, n))))
    assert seen == [(k, i, 4) for k in range(2) for i in range(1, 5)]

    class Cancelled(Exception):
        pass

    def cancel(i, n):
        if i == 2:
            raise Cancelled

    before = _checksums(stream)
    with pytest.raises(Cancelled):
        denoise_chunk(model, stream, on_step=cancel)
    assert _checksums(stream) == before


def test_parse_steps():
    from adastate_core.stream.config import parse_steps

    assert parse_steps("1000, 750,500,250") == (1000.0, 750.0, 500.0, 250.0)
    for bad in ("", "a,b", " , "):
        with pytest.raises(StreamConfigError, match="comma-separated timesteps"):
            parse_steps(bad)
