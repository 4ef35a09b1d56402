"""The training rollout: Self-Forcing's backward simulation over the AdaState stream.

It is the inference engine, not a copy of it: every chunk goes through `stream.window_layout`,
`stream.denoise_live` and `stream.advance` (window, eviction, anchor policy), so training and
inference cannot drift. With gradient off, exit at the last step and the same noise, the
rollout equals `stream_chunks` bit for bit (tested).

Per chunk (DESIGN.md §2.6, research/training_dmd.md §2.3-2.4):
* one exit step s, the same for every chunk (drawn by the caller per iteration);
* steps before s run without gradient; step s runs with gradient (the prompt's cross-attention
  K/V are recomputed inside it, so the text layers train); its x0 of the *content* frames is
  the chunk's output; the state's x0 only feeds the cache;
* the t = 0 cache-write pass runs without gradient on detached latents, so nothing carried
  across a chunk boundary (anchor/state K/V, window K/V, latents, s0) has a graph.
  `leak_content_kv=True` reproduces Self-Forcing's in-place cache for ablation: the window's
  content K/V keep the values of the cache pass but carry the gradient path of the exit
  step's K/V into later chunks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import CausalWanDiT
from ..stream import StreamConfig, StreamState
from ..stream.engine import advance, chunk_seed, denoise_live, noise_for, window_layout
from ..stream.state import CachedFrames, ChunkNoise

NoiseFn = Callable[[int, int], ChunkNoise]  # (chunk index, live state frames) -> noise


@dataclass
class Rollout:
    """video: [B, 16, chunks*C, h, w] content x0 (with gradient when the rollout had it);
    chunk_outputs / states: per chunk content and state x0 (state None before steady state);
    streams: the stream state *before* each chunk, then the final one."""

    video: Tensor
    chunk_outputs: list[Tensor]
    states: list[Tensor | None]
    streams: list[StreamState]
    exit_kv: list


def sample_noise_fn(config: StreamConfig, sample_seeds: Sequence[int]) -> NoiseFn:
    """Each sample of the batch draws its chunks' noise from its own seed exactly as a stream
    with `seed = sample seed` would (`draw_noise`), so a sample's rollout does not depend on
    which other samples share its micro-batch or process."""

    def fn(chunk_index: int, n_state: int) -> ChunkNoise:
        parts = [noise_for(config, chunk_seed(s, chunk_index), 1, n_state) for s in sample_seeds]
        if len(parts) == 1:
            return parts[0]
        cat = lambda xs: torch.cat(xs, dim=0)  # noqa: E731
        state = None if parts[0].state is None else cat([p.state for p in parts])
        renoise = tuple(cat([p.renoise[i] for p in parts]) for i in range(len(parts[0].renoise)))
        return ChunkNoise(cat([p.content for p in parts]), state, renoise)

    return fn


def start_stream(model: CausalWanDiT, conditioning: Tensor, config: StreamConfig) -> StreamState:
    """An empty stream for training: like `init_stream` but without the weight fingerprint
    (the weights change every update)."""
    with torch.no_grad():
        prompt = model.encode_context(conditioning)
    return StreamState(config, 0, None, None, conditioning, prompt, "training", "training")


def rollout(
    model: CausalWanDiT,
    conditioning: Tensor,
    config: StreamConfig,
    chunks: int,
    exit_step: int,
    noise_fn: NoiseFn,
    *,
    leak_content_kv: bool = False,
) -> Rollout:
    """Generate `chunks` chunks; gradient (if enabled by the caller) flows only through each
    chunk's exit step. conditioning: [B, L, text_dim] prompt rows (float32, trimmed)."""
    stream = start_stream(model, conditioning, config)
    grad = torch.is_grad_enabled()
    outputs: list[Tensor] = []
    states: list[Tensor | None] = []
    streams = [stream]
    exit_kvs: list = []
    shadow: tuple[Tensor, Tensor] | None = None  # leak ablation: zero-valued grad carriers
    for k in range(chunks):
        layout = window_layout(stream)
        s = len(layout.state_positions)
        noise = noise_fn(k, s)
        captured: list | None = [] if (leak_content_kv and grad) else None
        x0 = denoise_live(
            model,
            stream,
            layout,
            noise,
            exit_step=exit_step,
            grad_context=conditioning if grad else None,
            exit_kv=captured,
        )
        content, state = x0[:, :, s:], (x0[:, :, :s] if s else None)
        outputs.append(content)
        states.append(state)
        with torch.no_grad():
            stream = advance(
                model,
                stream,
                None if state is None else state.detach(),
                content.detach(),
            )
        if captured:
            kv = captured[0]
            exit_kvs.append(kv)
            stream, shadow = _leak(stream, kv, s, shadow)
        streams.append(stream)
    return Rollout(torch.cat(outputs, dim=2), outputs, states, streams, exit_kvs)


def _leak(stream: StreamState, kv, s: int, shadow):
    """Give the window's content K/V the exit step's gradient path (Self-Forcing's in-place
    cache write read by later chunks), keeping the cache pass's values exactly."""
    window = stream.window
    if window is None:
        return stream, shadow
    delta_k = kv.k[:, :, s:] - kv.k[:, :, s:].detach()  # zeros that carry the exit graph
    delta_v = kv.v[:, :, s:] - kv.v[:, :, s:].detach()
    if shadow is not None:
        delta_k = torch.cat([shadow[0], delta_k], dim=2)
        delta_v = torch.cat([shadow[1], delta_v], dim=2)
    n = window.num_frames  # the window is the newest n frames of (old window + this chunk)
    shadow = (delta_k[:, :, -n:], delta_v[:, :, -n:])
    leaked = CachedFrames(window.k + shadow[0], window.v + shadow[1], window.latent)
    return dataclasses.replace(stream, window=leaked), shadow
