"""Streams: iterate chunks with a prompt schedule, stopping by chunk count or seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import CausalWanDiT
from .config import StreamConfig
from .engine import StreamError, denoise_chunk, prepare_conditioning, set_prompt, update_state
from .state import Chunk, StreamState


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
) -> Iterator[StreamStep]:
    """Generate chunks until the stream has `chunks` chunks in total (counted from chunk 0, so
    a resumed stream finishes the same video) or lasts `seconds`; unbounded if neither is
    given. Only the current state is held: memory stays flat for any length.
    `on_step(chunk_index, step, steps)` is called after every denoising step."""
    cfg = stream.config
    if chunks is not None and seconds is not None:
        raise StreamError("give chunks or seconds, not both")
    total = (
        chunks
        if chunks is not None
        else (cfg.chunks_for_seconds(seconds) if seconds is not None else None)
    )
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
        chunk = denoise_chunk(
            model, stream, on_step=None if on_step is None else (lambda i, n, k=k: on_step(k, i, n))
        )
        stream = update_state(model, stream, chunk)
        yield StreamStep(chunk, stream)
