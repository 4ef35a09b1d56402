"""Priming a stream with given clean latents (an encoded image or video), so generation
continues from them: image-to-video and video extension without another model.

    stream = prime(model, init_stream(model, cond, cfg), latents)   # then generate as usual

The latents are written into the cache exactly as if the stream had generated them: chunk by
chunk, the t = 0 cache-write pass in the window each chunk would have had, with the eviction
and anchor bookkeeping of the policy. A prefix longer than the window leaves what a generated
one would: the last W frames in the window and the anchor (static / EMA sinks from the
prefix's first frames; an EMA sink also folds in the evicted frames).

Whole chunks. n latents make n // C whole chunks; the remaining r = n mod C latents (e.g. the
single latent of one image, r = 1 with C = 3) become the stream's `lead`: the next chunk keeps
them as they are (timestep 0 in every step, so exactly these latents) and denoises only its
other C - r frames, attending to them. So an image is the first frame of chunk 0 and the rest
of chunk 0 is generated.

The adaptive state. A live-state policy (adaptive, adaptive+sink) also denoises a state latent
with every steady-state chunk, which a prefix does not have. With `states` (one clean state
latent per steady prefix chunk, e.g. `Chunk.state` of a run being continued) the prefix is
primed exactly as generated (tested: the next chunk is then bit for bit the uninterrupted
stream's). Without, steady prefix chunks are written without a live state: the state slot keeps
s_0, the K/V of the prefix's first frame (as after chunk 0), until the first generated steady
chunk denoises a state and overwrites it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from ..model import CausalWanDiT
from .engine import StreamError, _check_model, advance
from .policies import policy_for
from .state import StreamState


def prime(
    model: CausalWanDiT,
    stream: StreamState,
    latents: Tensor,
    *,
    states: Sequence[Tensor | None] | None = None,
) -> StreamState:
    """A new stream state whose cache holds `latents` as generated content.

    stream: a new stream (`init_stream`, chunk 0). latents: [B, 16, n, h, w] clean normalised
    latents (the VAE encoder's output) at the stream's latent size, n >= 1. states: optional,
    one entry per whole prefix chunk (n // C): the clean state latent [B, 16, S, h, w] of each
    steady-state chunk (entries of other chunks are ignored; may be None).
    Returns the state before chunk n // C, with the remainder (n mod C latents) as its lead."""
    _check_model(model, stream)
    cfg = stream.config
    if stream.chunk_index != 0 or stream.window is not None or stream.lead is not None:
        raise StreamError(
            f"prime a new stream (this one is at chunk {stream.chunk_index}); start one with "
            "init_stream and prime it before the first chunk"
        )
    h, w = cfg.latent_size
    want = (stream.batch, 16, h, w)
    if latents.ndim != 5 or (latents.shape[0], latents.shape[1], *latents.shape[3:]) != want:
        raise StreamError(
            f"prefix latents have shape {list(latents.shape)}; this stream needs "
            f"[{stream.batch}, 16, frames, {h}, {w}] (the VAE encoding of "
            f"{cfg.height}x{cfg.width} frames)"
        )
    n = latents.shape[2]
    if n < 1:
        raise StreamError("the prefix has no latent frames")
    if not torch.isfinite(latents).all():
        raise StreamError("the prefix latents contain NaN or inf values")
    whole, rest = divmod(n, cfg.chunk)
    live_state = policy_for(cfg).live_state_frames(cfg) > 0
    if states is not None and len(states) != whole:
        raise StreamError(f"{len(states)} prefix states given for {whole} whole prefix chunks")
    latents = latents.to(model.device, torch.float32)
    with torch.no_grad():
        for k in range(whole):
            state = None
            if live_state and states is not None and cfg.steady(k):
                state = states[k]
                if state is not None:
                    if tuple(state.shape) != (stream.batch, 16, cfg.state, h, w):
                        raise StreamError(
                            f"prefix state {k} has shape {list(state.shape)}, needs "
                            f"{[stream.batch, 16, cfg.state, h, w]}"
                        )
                    state = state.to(model.device, torch.float32)
            content = latents[:, :, k * cfg.chunk : (k + 1) * cfg.chunk]
            stream = advance(model, stream, state, content)
    if rest:
        stream = dataclasses.replace(stream, lead=latents[:, :, whole * cfg.chunk :].clone())
    return stream


__all__ = ["prime"]
