"""Streams: iterate chunks with a prompt schedule, stopping by chunk count or seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import CausalWanDiT
from .config import StreamConfig
from .engine import (
    StreamError,
    chunk_seed,
    denoise_chunk,
    noise_for,
    prepare_conditioning,
    set_prompt,
    update_state,
)
from .policies import policy_for
from .state import Chunk, ChunkNoise, StreamState


@dataclass(frozen=True)
class PromptSchedule:
    """Conditioning per chunk index: entry (k, cond) applies from chunk k until the next entry.
    The first entry must start at chunk 0. `recache`: on a switch, recompute the cached K/V
    under the new prompt (LongLive's KV re-cache)."""

    entries: tuple[tuple[int, Tensor], ...]
    recache: bool = False

    def __post_init__(self) -> None:
        starts = [k for k, _ in self.entries]
        if not starts or starts[0] != 0:
            raise StreamError("a prompt schedule needs an entry starting at chunk 0 (time 0)")
        if starts != sorted(set(starts)):
            raise StreamError(f"prompt switch chunks must be strictly increasing, got {starts}")

    def at(self, chunk_index: int) -> Tensor:
        current = self.entries[0][1]
        for start, cond in self.entries:
            if start <= chunk_index:
                current = cond
        return current

    @classmethod
    def single(cls, conditioning: Tensor) -> PromptSchedule:
        return cls(((0, conditioning),))

    @classmethod
    def from_seconds(
        cls, config: StreamConfig, timed: Sequence[tuple[float, Tensor]], recache: bool = False
    ) -> PromptSchedule:
        """Switch times in seconds -> the first chunk shown at or after each time."""
        entries = [(config.chunk_at_seconds(sec), cond) for sec, cond in timed]
        return cls(tuple(entries), recache)


@dataclass(frozen=True)
class StreamStep:
    """A chunk and the stream state after it (save this state to resume after the chunk)."""

    chunk: Chunk
    stream: StreamState


def stream_chunks(
    model: CausalWanDiT,
    stream: StreamState,
    *,
    chunks: int | None = None,
    seconds: float | None = None,
    prompts: PromptSchedule | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
    on_denoised: Callable[[Chunk], None] | None = None,
) -> Iterator[StreamStep]:
    """Generate chunks until the stream has `chunks` chunks in total (counted from chunk 0, so
    a resumed stream finishes the same video) or lasts `seconds`; unbounded if neither is
    given. Only the current state is held: memory stays flat for any length.
    `on_step(chunk_index, step, steps)` is called after every denoising step;
    `on_denoised(chunk)` between a chunk's denoising and its cache update (a decoder started
    there delivers the first frames before the t = 0 pass runs)."""
    cfg = stream.config
    if chunks is not None and seconds is not None:
        raise StreamError("give chunks or seconds, not both")
    total = (
        chunks
        if chunks is not None
        else (cfg.chunks_for_seconds(seconds) if seconds is not None else None)
    )
    ahead = _NoiseAhead(stream, model.device)
    inner = _run(model, stream, total, prompts, on_step, on_denoised, ahead)
    del stream  # the loop holds only the current state (the first one is not pinned)
    try:
        yield from inner
    finally:
        ahead.close()


def _run(model, stream, total, prompts, on_step, on_denoised, ahead):
    checked = None  # the schedule entry the stream's prompt was last checked against
    while total is None or stream.chunk_index < total:
        if prompts is not None and prompts.at(stream.chunk_index) is not checked:
            checked = prompts.at(stream.chunk_index)  # an unchanged entry costs nothing
            want = prepare_conditioning(model, checked)
            if want.shape != stream.conditioning.shape or not torch.equal(
                want, stream.conditioning
            ):
                stream = set_prompt(model, stream, want, recache=prompts.recache)
        k = stream.chunk_index
        noise = ahead.take(k)
        if total is None or k + 1 < total:
            ahead.start(k + 1)  # drawn on the CPU while this chunk runs on the device
        chunk = denoise_chunk(
            model,
            stream,
            noise=noise,
            on_step=None if on_step is None else (lambda i, n, k=k: on_step(k, i, n)),
        )
        if on_denoised is not None:
            on_denoised(chunk)
        stream = update_state(model, stream, chunk)
        yield StreamStep(chunk, stream)


class _NoiseAhead:
    """Draws chunk k+1's noise in a background thread while chunk k is computed, exactly as
    `draw_noise` would (same CPU generator, same values: the seed contract is unchanged),
    into pinned memory on CUDA so it reaches the device without a sync."""

    def __init__(self, stream: StreamState, device: torch.device):
        self.config, self.batch = stream.config, stream.batch
        self.pin = torch.device(device).type == "cuda" and torch.cuda.is_available()
        self.pending: tuple[int, Future] | None = None
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="adastate-noise")

    def _draw(self, k: int) -> ChunkNoise:
        cfg = self.config
        n_state = policy_for(cfg).live_state_frames(cfg) if cfg.steady(k) else 0
        noise = noise_for(cfg, chunk_seed(cfg.seed, k), self.batch, n_state)
        if not self.pin:
            return noise
        pin = lambda t: None if t is None else t.pin_memory()  # noqa: E731
        return ChunkNoise(pin(noise.content), pin(noise.state), tuple(map(pin, noise.renoise)))

    def start(self, k: int) -> None:
        self.pending = (k, self.pool.submit(self._draw, k))

    def take(self, k: int) -> ChunkNoise:
        if self.pending is not None and self.pending[0] == k:
            noise = self.pending[1].result()
            self.pending = None
            return noise
        return self._draw(k)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
