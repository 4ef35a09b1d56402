"""The whole stream in one call: denoise -> update -> decode -> write, chunk by chunk.

Frames go to the video writer as each chunk is decoded (RAM stays flat for any length); after
every chunk the resumable *run state* (stream state + the decoder's causal cache + how many
frames the file holds) can be saved atomically, so a stopped or crashed run continues exactly
where it stopped. Used by the `adastate` CLI and the ComfyUI whole-stream node.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from .errors import AdaStateError
from .io.background import BackgroundWriter, frames_uint8, to_host
from .model import CausalWanDiT
from .stream import (
    PromptSchedule,
    StreamState,
    load_stream_with_extras,
    save_stream,
    stream_chunks,
)

RUN_FORMAT = "adastate-run/1"


class NonFiniteChunkError(AdaStateError):
    """A chunk's latent is not finite (broken weights or settings): the run stops before it
    reaches the video."""


@dataclass
class ChunkReport:
    """What `on_chunk` callbacks receive after each chunk is handed to the writer (a writer
    thread puts it on disk; `generate` returns only when everything is written)."""

    index: int  # chunk just finished
    total: int | None
    video: Tensor  # decoder output [B, 3, T, H, W] of this chunk, 0..1 (on the device)
    frames_written: int  # frames of the video so far, this chunk included
    elapsed: float  # seconds since the run (or the resume) started
    stream: StreamState
    state_latent: Tensor | None  # clean hidden state latent of this chunk (inspection)

    @property
    def frames(self) -> Tensor:
        """[T, H, W, 3] float 0..1 of this chunk (first batch row), on the CPU; copied from
        the device when first asked for (the CLI never asks)."""
        cached = self.__dict__.get("_frames")
        if cached is None:
            cached = self.__dict__["_frames"] = to_frames(self.video)
        return cached


@dataclass
class RunResult:
    chunks: int  # chunks in the video now (counted from chunk 0)
    frames_written: int
    seconds: float
    stopped: bool  # stopped early on request (Ctrl-C / Cancel)
    stream: StreamState | None = None
    vae_cache: object | None = None
    notes: list[str] = field(default_factory=list)


def save_run(
    path: str | Path,
    stream: StreamState,
    vae_cache,
    frames_written: int,
    meta: dict[str, str] | None = None,
) -> Path:
    """Atomically write the resumable run state."""
    from .vae import cache_to_tensors

    tensors, cache_meta = cache_to_tensors(vae_cache)
    info = {
        "format": RUN_FORMAT,
        "frames_written": str(frames_written),
        "vae_cache": json.dumps(cache_meta),
        **(meta or {}),
    }
    return save_stream(
        stream, path, extras={f"vae.{k}": v for k, v in tensors.items()}, extra_meta=info
    )


def load_run(model: CausalWanDiT, path: str | Path, device=None):
    """-> (stream, vae_cache, frames_written, meta) from a run state written by `save_run`.
    A plain stream state (no decoder cache) resumes too, with a fresh decoder cache only if it
    is at chunk 0."""
    from .stream.engine import StreamError
    from .vae import cache_from_tensors

    stream, tensors, meta = load_stream_with_extras(model, path)
    if meta.get("format") != RUN_FORMAT:
        if stream.chunk_index:
            raise StreamError(
                f"{path} is a stream state without the video decoder's cache; it can continue "
                "a latent stream from Python, but not a video (save runs with --save-state)"
            )
        return stream, None, 0, meta
    vae_tensors = {k[len("vae.") :]: v for k, v in tensors.items() if k.startswith("vae.")}
    cache = cache_from_tensors(vae_tensors, json.loads(meta["vae_cache"]), device=device)
    return stream, cache, int(meta["frames_written"]), meta


def to_frames(video: Tensor) -> Tensor:
    """Decoder output [B, 3, T, H, W] -> first row as IMAGE frames [T, H, W, 3] float32 CPU."""
    return video[0].permute(1, 2, 3, 0).float().cpu()


def generate(
    model: CausalWanDiT,
    vae,
    stream: StreamState,
    writer,
    *,
    total_chunks: int | None,
    prompts: PromptSchedule | None = None,
    vae_cache=None,
    frames_written: int = 0,
    state_path: str | Path | None = None,
    state_meta: dict[str, str] | None = None,
    on_chunk: Callable[[ChunkReport], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
    on_decode: Callable[[int, int, int], None] | None = None,
    skip_frames: int = 0,
) -> RunResult:
    """Run `stream` to `total_chunks` chunks (from chunk 0; None = until `should_stop`),
    decoding each chunk with `vae` (its causal cache carried across chunks) and writing the
    frames. `should_stop` is polled between chunks: a stop finishes the chunk in flight, so
    the file and the saved state always agree. Exceptions propagate after the state of the
    last finished chunk has been saved; closing the writer is the caller's job.
    `on_step(chunk_index, step, steps)` runs after every denoising step (progress; an
    exception it raises, e.g. ComfyUI's Cancel, stops the run between steps);
    `on_decode(chunk_index, frame, frames)` after every latent frame the VAE decodes (the
    same, during the decode). `skip_frames`: video frames of the first chunk that are not
    written (a primed stream's lead: frames the file already holds, `prefix.start_from`).

    Frames are converted to uint8 on the device and written by a writer thread while the
    next chunk is computed (at most 2 chunks in flight). The run state (`state_path`) is
    saved and `on_chunk` is called from that thread once the chunk is on disk, so a chunk
    reported done is in the file; `generate` returns (or raises) only after every chunk
    handed to the writer is written."""
    start = time.perf_counter()
    result = RunResult(stream.chunk_index, frames_written, 0.0, False, stream, vae_cache)
    if total_chunks is not None and stream.chunk_index >= total_chunks:
        return result
    decoded: dict = {}  # the chunk decoded between its denoising and its cache update

    def decode(chunk) -> None:
        # before the t = 0 pass: the first frames leave as soon as the chunk is denoised
        nonlocal vae_cache
        finite = torch.isfinite(chunk.content).all()  # checked by the writer: no sync here
        # nobody else needs the previous decoder cache unless it is saved with the run state:
        # then it is read by the writer thread; else its memory is reused as it is read
        consume = state_path is None
        if on_decode is None:
            video, vae_cache = vae.decode_chunk(chunk.content, vae_cache, consume=consume)
        else:

            def on_frame(done: int, frames: int, index: int = chunk.index) -> None:
                on_decode(index, done, frames)

            video, vae_cache = vae.decode_chunk(
                chunk.content, vae_cache, on_frame=on_frame, consume=consume
            )
        # uint8 on the device, copied out without waiting
        (host, finite), ready = to_host(frames_uint8(video), finite)
        decoded.update(video=video, host=host, finite=finite, ready=ready, cache=vae_cache)

    steps = stream_chunks(
        model, stream, chunks=total_chunks, prompts=prompts, on_step=on_step, on_denoised=decode
    )
    del stream, result  # only the current state is held: memory stays flat
    background = BackgroundWriter(writer, depth=2)
    last, stopped = None, False
    try:
        for step in steps:
            video, host, ready = decoded.pop("video"), decoded.pop("host"), decoded.pop("ready")
            finite, cache_after = decoded.pop("finite"), decoded.pop("cache")
            if skip_frames:  # the primed lead: already in the file
                video, host, skip_frames = video[:, :, skip_frames:], host[skip_frames:], 0
            # the writer thread checks, encodes, then saves the run state and reports the
            # chunk: a chunk reported done is on disk
            before = partial(_check_finite, finite, step.chunk.index, frames_written)
            frames_written += host.shape[0]
            report = ChunkReport(
                step.chunk.index,
                total_chunks,
                video,
                frames_written,
                0.0,
                step.stream,
                step.chunk.state,
            )
            saved = cache_after if state_path is not None else None  # kept only to be saved
            after = partial(_after_write, report, saved, state_path, state_meta, on_chunk, start)
            background.put(host, ready, after, before)
            last = step.stream
            # nothing of this chunk stays referenced here: flat memory
            del video, host, report, finite, cache_after, saved, after, before, step
            if should_stop is not None and should_stop():
                stopped = True
                break
    except BaseException:
        try:  # every chunk handed over still reaches the disk; the first error is raised
            background.close()
        except BaseException:  # noqa: BLE001 - the error in flight matters more
            pass
        raise
    background.close()  # every chunk handed over is on disk before this returns
    return RunResult(
        last.chunk_index,
        frames_written,
        time.perf_counter() - start,
        stopped,
        last,
        vae_cache,
    )


def _check_finite(finite: Tensor, index: int, frames_before: int) -> None:
    """In the writer thread, before a chunk is written: refuse a chunk with NaN/inf."""
    if not bool(finite):
        raise NonFiniteChunkError(
            f"the model produced NaN or inf values in chunk {index + 1}: its weights or the "
            "settings (e.g. the shift or the steps) are broken; the video keeps the "
            f"{frames_before} frames of the chunks before it"
        )


def _after_write(report, vae_cache, state_path, state_meta, on_chunk, start) -> None:
    """In the writer thread, once a chunk's frames are on disk: save the run state (it never
    claims frames that are not written), then report the chunk."""
    if state_path is not None:
        save_run(state_path, report.stream, vae_cache, report.frames_written, state_meta)
    if on_chunk is not None:
        report.elapsed = time.perf_counter() - start
        on_chunk(report)


def pseudo_embedding(text: str, rows: int, width: int) -> Tensor:
    """A deterministic stand-in for text-encoder rows (smoke runs on tiny random models only:
    it carries no meaning)."""
    import hashlib

    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, rows, width, generator=g)
