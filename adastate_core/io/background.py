"""Writing frames off the critical path: a writer thread fed through a bounded queue.

The main thread hands over a chunk's frames (uint8, copied to the host without blocking the
GPU) and goes on with the next chunk while the thread encodes and writes them, then runs the
chunk's follow-up (saving the resumable run state, so a state never claims frames that are not
on disk). The queue holds at most `depth` chunks: a slow disk or encoder slows the stream
down instead of filling memory. `close()` writes everything handed over (also after an error
or Ctrl-C in the main thread), then re-raises the first error the thread met.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch
from torch import Tensor

_DONE = object()


def frames_uint8(video: Tensor) -> Tensor:
    """Decoder output [B, 3, T, H, W] in 0..1 -> the first row as uint8 frames [T, H, W, 3] on
    the same device: round(clamp(x, 0, 1) * 255), NaN -> 0, exactly as the writers convert
    float frames (so the file is bit-identical whichever side converts)."""
    x = torch.nan_to_num(video[0].float(), nan=0.0).clamp_(0.0, 1.0).mul_(255.0).round_()
    return x.to(torch.uint8).permute(1, 2, 3, 0).contiguous()


def to_host(*tensors: Tensor) -> tuple[list[Tensor], torch.cuda.Event | None]:
    """Start copying device tensors into pinned host memory without waiting; -> (host
    tensors, event to wait on before reading them). CPU tensors are returned as they are."""
    if all(t.device.type != "cuda" for t in tensors):
        return list(tensors), None
    hosts = []
    for t in tensors:
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        hosts.append(host)
    event = torch.cuda.Event()
    event.record()
    return hosts, event


class BackgroundWriter:
    def __init__(self, writer, depth: int = 2):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="adastate-writer", daemon=True)
        self._thread.start()

    def put(
        self,
        frames: Tensor,
        event: torch.cuda.Event | None = None,
        then: Callable[[], None] | None = None,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Queue frames [T, H, W, 3] for writing, then `then()` (after they are on disk).
        `before()` runs first, once the copy has arrived; an error it raises stops the
        writing (nothing of this chunk is written) and reaches the caller."""
        self.check()
        self._queue.put((frames, event, then, before))

    def check(self) -> None:
        """Raise the writer thread's error, if it had one."""
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Write everything queued, stop the thread, raise its error if any."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        self.check()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if self._error is not None:
                continue  # after a failure: keep taking items so the producer never blocks
            frames, event, then, before = item
            try:
                if event is not None:
                    event.synchronize()
                if before is not None:
                    before()
                self.writer.write(frames)
                if then is not None:
                    then()
            except BaseException as err:  # noqa: BLE001 - handed to the main thread
                self._error = err
