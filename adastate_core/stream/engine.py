"""The AdaState chunk transition (DESIGN.md §2): window layout, denoise (paper Eq. 2) and cache
update (Eq. 3), prompt changes.

A chunk is two operations, which are also the two ComfyUI nodes:

    chunk = denoise_chunk(model, stream)          # 4 DiT calls on [live state, live content]
    stream = update_state(model, stream, chunk)   # 1 DiT call at t = 0: cache write, eviction,
                                                  # anchor overwrite
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import AdaStateError
from ..model import CausalWanDiT, KVSegment
from .config import StreamConfig
from .policies import policy_for
from .schedule import renoise, x0_from_velocity
from .state import CachedFrames, Chunk, ChunkNoise, StreamState, new_token


class StreamError(AdaStateError, ValueError):
    """Invalid input to a stream operation."""


# ----------------------------------------------------------------------------------------------
# conditioning


def prepare_conditioning(model: CausalWanDiT, conditioning: Tensor) -> Tensor:
    """Check text-encoder rows and trim trailing all-zero padding rows.

    conditioning: [B, L, text_dim] (or [L, text_dim]) umT5 rows, padding rows zero (as
    ComfyUI's CLIPTextEncode gives them). Returns a new float32 tensor [B, L_real, text_dim].
    """
    cfg = model.config
    if not isinstance(conditioning, Tensor):
        raise StreamError(f"conditioning must be a tensor, got {type(conditioning).__name__}")
    cond = conditioning.unsqueeze(0) if conditioning.ndim == 2 else conditioning
    if cond.ndim != 3 or cond.shape[-1] != cfg.text_dim:
        raise StreamError(
            f"conditioning has shape {list(conditioning.shape)} but this model needs "
            f"[batch, tokens, {cfg.text_dim}] rows of the umT5-XXL text encoder: it came from a "
            "different text encoder; use the umT5-XXL one (umt5_xxl_fp8_e4m3fn_scaled / "
            "umt5_xxl_fp16.safetensors: --text-encoder in the CLI, CLIPLoader type 'wan' in "
            "ComfyUI)"
        )
    if not torch.isfinite(cond).all():
        raise StreamError(
            "the prompt's text embedding contains NaN or inf values: the text encoder's "
            "weights are broken (re-download the text encoder file)"
        )
    nonzero = cond.abs().amax(dim=(0, 2)) > 0
    length = int(nonzero.nonzero().max()) + 1 if nonzero.any() else 1
    if length > cfg.text_len:
        raise StreamError(
            f"conditioning has {length} non-padding rows; the model takes at most {cfg.text_len}"
            " (shorten the prompt)"
        )
    return cond[:, :length].to(device=model.device, dtype=torch.float32).clone()


# ----------------------------------------------------------------------------------------------
# window layout


@dataclass(frozen=True)
class Layout:
    """The visible window of chunk k: cached segments with their positions, and the temporal
    positions of the live state frames and live content frames (block-relative RoPE)."""

    segments: tuple[KVSegment, ...]
    state_positions: tuple[int, ...]
    content_positions: tuple[int, ...]
    steady: bool

    @property
    def live_positions(self) -> list[int]:
        return [*self.state_positions, *self.content_positions]


def window_layout(stream: StreamState) -> Layout:
    """Steady state: [anchor 0..a-1 | live state a..a+s-1 | cached content | live content];
    before eviction begins: [cached content 0..n-1 | live content], exactly Self-Forcing."""
    cfg = stream.config
    steady = cfg.steady(stream.chunk_index)
    segments = []
    pos = 0
    state_positions: tuple[int, ...] = ()
    if steady:
        if stream.anchor is not None:
            a = stream.anchor.num_frames
            segments.append(stream.anchor.segment(range(0, a)))
            pos = a
        s = policy_for(cfg).live_state_frames(cfg)
        state_positions = tuple(range(pos, pos + s))
        pos += s
    if stream.window is not None:
        n = stream.window.num_frames
        segments.append(stream.window.segment(range(pos, pos + n)))
        pos += n
    content_positions = tuple(range(pos, pos + cfg.chunk))
    return Layout(tuple(segments), state_positions, content_positions, steady)


# ----------------------------------------------------------------------------------------------
# randomness


def chunk_seed(seed: int, chunk_index: int) -> int:
    """Seed of chunk k's generator: a well-mixed function of (seed, k)."""
    state = np.random.SeedSequence([seed % 2**64, chunk_index]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


def draw_noise(stream: StreamState) -> ChunkNoise:
    """Chunk k's noise from its own CPU generator (identical on every device). Content noise is
    drawn first, so every policy sees the same content noise for a seed."""
    cfg = stream.config
    n_state = len(window_layout(stream).state_positions)
    return noise_for(cfg, chunk_seed(cfg.seed, stream.chunk_index), stream.batch, n_state)


def noise_for(cfg: StreamConfig, seed: int, batch: int, n_state: int) -> ChunkNoise:
    """All noise of one chunk with `n_state` live state frames, from a CPU generator seeded
    with `seed`: content, state, then per re-noise step [state, content]."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    h, w = cfg.latent_size
    b, s = batch, n_state

    def normal(frames: int) -> Tensor:
        return torch.randn(b, 16, frames, h, w, generator=gen, dtype=torch.float32)

    content = normal(cfg.chunk)
    state = normal(s) if s else None
    renoises = []
    for _ in cfg.schedule.steps[1:]:
        c = normal(cfg.chunk)
        renoises.append(torch.cat([normal(s), c], dim=2) if s else c)
    return ChunkNoise(content, state, tuple(renoises))


def _check_noise(noise: ChunkNoise, stream: StreamState, s: int) -> None:
    cfg = stream.config
    h, w = cfg.latent_size
    b = stream.batch
    want = {
        "content": (b, 16, cfg.chunk, h, w),
        "state": (b, 16, s, h, w) if s else None,
    }
    got = {
        "content": tuple(noise.content.shape),
        "state": None if noise.state is None else tuple(noise.state.shape),
    }
    for name in want:
        if want[name] != got[name]:
            raise StreamError(f"noise.{name} has shape {got[name]}, this chunk needs {want[name]}")
    if len(noise.renoise) != len(cfg.schedule.steps) - 1:
        raise StreamError(
            f"{len(noise.renoise)} re-noise tensors given; the schedule has "
            f"{len(cfg.schedule.steps) - 1} re-noise steps"
        )
    for r in noise.renoise:
        if tuple(r.shape) != (b, 16, s + cfg.chunk, h, w):
            raise StreamError(
                f"re-noise tensor has shape {tuple(r.shape)}, needs {(b, 16, s + cfg.chunk, h, w)}"
            )


# ----------------------------------------------------------------------------------------------
# operations


def init_stream(model: CausalWanDiT, conditioning: Tensor, config: StreamConfig) -> StreamState:
    """A new, empty stream for `conditioning` ([B, L, text_dim] prompt rows)."""
    cond = prepare_conditioning(model, conditioning)
    with torch.no_grad():
        prompt = model.encode_context(cond)
    return StreamState(
        config=config,
        chunk_index=0,
        window=None,
        anchor=None,
        conditioning=cond,
        prompt=prompt,
        model_id=model.fingerprint(),
        token=new_token(),
    )


def _check_model(model: CausalWanDiT, stream: StreamState) -> None:
    if model.fingerprint() != stream.model_id:
        raise StreamError(
            "this stream's cache was made by a different model (or the same file loaded at "
            "another weight precision); use the DiT that started the stream"
        )


def denoise_chunk(
    model: CausalWanDiT,
    stream: StreamState,
    noise: ChunkNoise | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Chunk:
    """Denoise chunk `stream.chunk_index` (paper Eq. 2): live state and live content start
    from independent noise and are denoised jointly in the window; for each sigma
    x0 = x_t - sigma v, then re-noise to the next sigma with fresh noise.
    `on_step(step, steps)` is called after each step (progress, cancellation: an exception it
    raises propagates and leaves `stream` untouched)."""
    _check_model(model, stream)
    layout = window_layout(stream)
    s = len(layout.state_positions)
    noise = noise if noise is not None else draw_noise(stream)
    _check_noise(noise, stream, s)
    with torch.no_grad():
        x0 = denoise_live(model, stream, layout, noise, on_step=on_step)
    return Chunk(
        index=stream.chunk_index,
        content=x0[:, :, s:].clone(),
        state=x0[:, :, :s].clone() if s else None,
        steady=layout.steady,
        stream_token=stream.token,
    )


def denoise_live(
    model: CausalWanDiT,
    stream: StreamState,
    layout: Layout,
    noise: ChunkNoise,
    *,
    exit_step: int | None = None,
    grad_context: Tensor | None = None,
    exit_kv: list | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> Tensor:
    """The denoising loop of one chunk, shared by inference and training: returns x0 of the
    live frames [state, content] predicted at step `exit_step` (default: the last step).

    Steps before `exit_step` always run without gradient. The exit step runs in the caller's
    grad mode (Self-Forcing's backward simulation: the only differentiable call of a chunk);
    with `grad_context` (the prompt rows) it recomputes the prompt's cross-attention K/V
    inside that call so the text layers train too (same values as the cached `stream.prompt`).
    `exit_kv`: a list that receives the exit call's live K/V segment (training ablation of
    Self-Forcing's in-place cache, `train.rollout`).
    """
    cfg = stream.config
    sigmas, timesteps = cfg.schedule.sigmas, cfg.schedule.timesteps
    last = len(sigmas) - 1 if exit_step is None else exit_step
    if not 0 <= last < len(sigmas):
        raise StreamError(f"exit step {exit_step} is outside the {len(sigmas)} steps")
    s = len(layout.state_positions)
    device = model.device
    parts = [noise.state, noise.content] if s else [noise.content]
    # copied part by part (asynchronously when the noise is in pinned memory), joined on the
    # device
    parts = [p.to(device=device, dtype=torch.float32, non_blocking=True) for p in parts]
    x = torch.cat(parts, dim=2) if s else parts[0]
    n_live = s + cfg.chunk
    lead = stream.lead
    if lead is not None:  # known first content frames: clean, at timestep 0 in every step
        r = lead.shape[2]
        x = torch.cat([x[:, :, :s], lead.to(device, torch.float32), x[:, :, s + r :]], dim=2)
        known = torch.zeros(n_live, dtype=torch.bool)
        known[s : s + r] = True
        sigmas = [_per_frame(v, known, device) for v in sigmas]
        timesteps = [_per_frame(v, known, device) for v in timesteps]
    for i in range(last + 1):
        sigma, t = sigmas[i], timesteps[i]
        if isinstance(t, Tensor):
            tt = t.reshape(1, n_live).expand(stream.batch, n_live).float()
        else:
            tt = torch.full((stream.batch, n_live), t, dtype=torch.float32, device=device)
        exiting = i == last
        context = grad_context if exiting and grad_context is not None else stream.prompt
        with torch.set_grad_enabled(exiting and torch.is_grad_enabled()):
            if exiting and exit_kv is not None:
                v, kv = model(
                    x,
                    tt,
                    context,
                    positions=layout.live_positions,
                    cache=layout.segments,
                    return_kv=True,
                )
                exit_kv.append(kv)
            else:
                v = model(x, tt, context, positions=layout.live_positions, cache=layout.segments)
            x0 = x0_from_velocity(x, v, sigma)
        if on_step is not None:
            on_step(i + 1, len(sigmas))
        if not exiting:
            x = renoise(x0, noise.renoise[i].to(device, non_blocking=True), sigmas[i + 1])
    return x0


def _per_frame(value: float, known: Tensor, device) -> Tensor:
    """A per-live-frame schedule value: `value` for frames being denoised, 0 for known ones
    (float64 [1, 1, F, 1, 1]: broadcasts over latents in x0_from_velocity / renoise)."""
    out = torch.where(known, 0.0, value).to(torch.float64)
    return out.reshape(1, 1, -1, 1, 1).to(device)


def update_state(model: CausalWanDiT, stream: StreamState, chunk: Chunk) -> StreamState:
    """Cache update (paper Eq. 3): one DiT pass on [ŝ, x̂] at t = 0 in the same window; the
    content K/V join the window (oldest frames beyond W are evicted) and the policy decides
    the anchor (adaptive: the state K/V overwrite it)."""
    _check_model(model, stream)
    if chunk.stream_token != stream.token or chunk.index != stream.chunk_index:
        raise StreamError(
            f"chunk {chunk.index} was denoised from another stream state than this one (at chunk "
            f"{stream.chunk_index}); update the stream the chunk came from"
        )
    with torch.no_grad():
        return advance(model, stream, chunk.state, chunk.content)


def advance(
    model: CausalWanDiT, stream: StreamState, state: Tensor | None, content: Tensor
) -> StreamState:
    """The cache-write pass and the window / anchor bookkeeping of `update_state`, without its
    checks (shared with training; run it under no_grad: the cache carries no graph)."""
    cfg = stream.config
    policy = policy_for(cfg)
    layout = window_layout(stream)
    # a steady chunk without a live state (a primed prefix chunk): the content alone at its
    # positions; the anchor is left as it was
    s = len(layout.state_positions) if state is not None else 0
    positions = layout.live_positions if s else list(layout.content_positions)
    x = torch.cat([state, content], dim=2) if s else content
    x = x.to(model.device, torch.float32)
    kv = model.cache_kv(
        x,
        stream.prompt,
        positions=positions,
        cache=layout.segments,
    )
    live = CachedFrames(kv.k, kv.v, x)
    content_frames = live.view(s, s + cfg.chunk)
    state_frames = live.frames(0, s) if s else None

    # the window keeps the newest W of (old window + this chunk); the rest is evicted
    old = stream.window
    n_old = 0 if old is None else old.num_frames
    evict = max(0, n_old + cfg.chunk - cfg.window)
    from_old, from_new = min(evict, n_old), evict - min(evict, n_old)
    window = CachedFrames.cat(
        [
            old.view(from_old, n_old) if from_old < n_old else None,
            content_frames.view(from_new, cfg.chunk) if from_new < cfg.chunk else None,
        ]
    )
    evicted = None
    if evict and policy.needs_evicted():
        evicted = CachedFrames.cat(
            [
                old.view(0, from_old) if from_old else None,
                content_frames.view(0, from_new) if from_new else None,
            ]
        )
    if stream.chunk_index == 0:
        anchor = policy.initial(cfg, content_frames)
    else:
        anchor = policy.next(cfg, stream.anchor, state_frames, evicted)
    return dataclasses.replace(
        stream,
        chunk_index=stream.chunk_index + 1,
        window=window,
        anchor=anchor,
        token=new_token(),
        lead=None,
    )


def set_prompt(
    model: CausalWanDiT, stream: StreamState, conditioning: Tensor, recache: bool = False
) -> StreamState:
    """Switch the prompt from the next chunk on (DESIGN.md §2.5): new cross-attention K/V;
    with `recache`, the cached anchor and content K/V are recomputed at t = 0 under the new
    prompt from their clean latents (LongLive's KV re-cache): the anchor alone at its
    positions, then the content window attending to it, at the positions the next chunk
    reads them at. An EMA anchor has no latent and is kept."""
    _check_model(model, stream)
    cond = prepare_conditioning(model, conditioning)
    if cond.shape[0] != stream.batch:
        raise StreamError(
            f"the new conditioning has batch {cond.shape[0]}, the stream has {stream.batch}"
        )
    with torch.no_grad():
        prompt = model.encode_context(cond)
    new = dataclasses.replace(stream, conditioning=cond, prompt=prompt, token=new_token())
    if not recache or (stream.window is None and stream.anchor is None):
        return new
    layout = window_layout(stream)
    anchor, segments = stream.anchor, []
    with torch.no_grad():
        if anchor is not None:
            a = anchor.num_frames
            if anchor.latent is not None:
                kv = model.cache_kv(anchor.latent, prompt, positions=range(a))
                anchor = CachedFrames(kv.k, kv.v, anchor.latent)
            if layout.steady:
                segments.append(anchor.segment(range(a)))
        window = stream.window
        if window is not None:
            positions = layout.segments[-1].positions
            kv = model.cache_kv(window.latent, prompt, positions=positions, cache=segments)
            window = CachedFrames(kv.k, kv.v, window.latent)
    return dataclasses.replace(new, window=window, anchor=anchor)


def same_config_or_raise(saved: StreamConfig, wanted: StreamConfig | None) -> None:
    if wanted is None or wanted == saved:
        return
    diffs = [
        f"{f.name}={getattr(saved, f.name)!r} (asked {getattr(wanted, f.name)!r})"
        for f in dataclasses.fields(StreamConfig)
        if getattr(saved, f.name) != getattr(wanted, f.name)
    ]
    raise StreamError(
        "the saved stream was made with other settings: "
        + ", ".join(diffs)
        + "; resume with the saved settings (or start a new stream)"
    )


__all__ = [
    "Layout",
    "StreamError",
    "advance",
    "chunk_seed",
    "denoise_chunk",
    "denoise_live",
    "draw_noise",
    "noise_for",
    "init_stream",
    "prepare_conditioning",
    "same_config_or_raise",
    "set_prompt",
    "update_state",
    "window_layout",
]
