"""Immutable values passed between stream operations: cached frames, the stream state, a chunk.

Every operation returns new values and never writes into a tensor it was given (ComfyUI hands
the same cached objects to later runs, DESIGN.md §3.1). Unchanged tensors are shared.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from ..model import CrossKV, KVSegment
from .config import StreamConfig


def new_token() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class CachedFrames:
    """Clean K/V of consecutive cached latent frames with the clean latents they came from.

    k, v: [layers, B, F, N, dim], keys without RoPE. latent: [B, 16, F, h, w] normalised clean
    latent, or None where there is no single latent behind the K/V (an EMA anchor).
    """

    k: Tensor
    v: Tensor
    latent: Tensor | None

    @property
    def num_frames(self) -> int:
        return self.k.shape[2]

    def segment(self, positions: Sequence[float]) -> KVSegment:
        """The K/V placed at window `positions` for one forward pass."""
        return KVSegment(self.k, self.v, torch.zeros(0)).at(positions)

    def view(self, start: int, stop: int) -> CachedFrames:
        """Frames [start, stop) as views (no copy); pass to `cat`, do not store."""
        lat = None if self.latent is None else self.latent[:, :, start:stop]
        return CachedFrames(self.k[:, :, start:stop], self.v[:, :, start:stop], lat)

    def frames(self, start: int, stop: int) -> CachedFrames:
        """Frames [start, stop) in their own storage (a slice must not keep the rest alive)."""
        lat = None if self.latent is None else self.latent[:, :, start:stop].clone()
        return CachedFrames(self.k[:, :, start:stop].clone(), self.v[:, :, start:stop].clone(), lat)

    @staticmethod
    def cat(parts: Sequence[CachedFrames]) -> CachedFrames | None:
        """Frames of `parts` in order, in new storage; None if there are no frames."""
        parts = [p for p in parts if p is not None and p.num_frames > 0]
        if not parts:
            return None
        latents = [p.latent for p in parts]
        latent = None if any(x is None for x in latents) else torch.cat(latents, dim=2)
        return CachedFrames(
            torch.cat([p.k for p in parts], dim=2), torch.cat([p.v for p in parts], dim=2), latent
        )

    def tensors(self) -> Iterator[Tensor]:
        yield self.k
        yield self.v
        if self.latent is not None:
            yield self.latent


@dataclass(frozen=True)
class StreamState:
    """Where a stream stands before chunk `chunk_index`.

    window: cached content frames (at most W), oldest first. anchor: the anchor slot (policy
    defined: adaptive state, static sink, EMA sink, sink + state), or None. conditioning:
    [B, L, text_dim] prompt rows (trimmed); prompt: their cross-attention K/V. model_id: the
    fingerprint of the DiT that made the cache. token: identity of this exact state (a chunk
    can only be applied to the state it was denoised from). The random stream is a pure
    function of (config.seed, chunk_index), so it needs no stored generator.
    lead: [B, 16, r, h, w] clean latents (r < chunk) the next chunk starts with: a primed
    prefix that did not fill a whole chunk (`stream.prime`). The next chunk keeps them as
    they are (timestep 0) and denoises only its other frames.
    """

    config: StreamConfig
    chunk_index: int
    window: CachedFrames | None
    anchor: CachedFrames | None
    conditioning: Tensor
    prompt: CrossKV
    model_id: str
    token: str
    lead: Tensor | None = None

    @property
    def batch(self) -> int:
        return self.conditioning.shape[0]

    def tensors(self) -> Iterator[Tensor]:
        for part in (self.window, self.anchor):
            if part is not None:
                yield from part.tensors()
        yield self.conditioning
        yield self.prompt.k
        yield self.prompt.v
        if self.lead is not None:
            yield self.lead

    def nbytes(self) -> int:
        """Bytes of memory this state keeps alive (each storage counted once)."""
        seen: dict[int, int] = {}
        for t in self.tensors():
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())


@dataclass(frozen=True)
class Chunk:
    """One denoised chunk.

    content: [B, 16, C, h, w] clean normalised latent (x̂) — the video. state: [B, 16, S, h, w]
    clean adaptive-state latent (ŝ) when one was denoised, else None; never rendered as video
    (decode it only to inspect). steady: whether the chunk ran with anchor slot + live state.
    """

    index: int
    content: Tensor
    state: Tensor | None
    steady: bool
    stream_token: str


@dataclass(frozen=True)
class ChunkNoise:
    """All randomness of one chunk, for reproducibility and research.

    content: [B, 16, C, h, w] initial noise; state: [B, 16, S, h, w] or None; renoise: one
    tensor per step after the first, [B, 16, S + C, h, w] (state frames first, as the live
    frames are laid out), or [B, 16, C, h, w] without a live state.
    """

    content: Tensor
    state: Tensor | None
    renoise: tuple[Tensor, ...]


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]
