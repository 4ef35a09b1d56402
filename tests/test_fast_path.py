"""Writing off the critical path (issue 11): device-side uint8 conversion equals the writers'
own, the writer thread writes everything handed to it in order, then runs each chunk's
follow-up, and its errors reach the caller."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from adastate_core.io import to_uint8_frames
from adastate_core.io.background import BackgroundWriter, frames_uint8, to_host


def test_device_conversion_equals_the_writers_conversion():
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 5, 8, 12, generator=g) * 1.4 - 0.2  # out of range both ways
    video[0, 0, 0, 0, :4] = torch.tensor([float("nan"), 0.5 / 255, 1.5 / 255, 254.5 / 255])
    want = to_uint8_frames(video[0].permute(1, 2, 3, 0).float())
    got = frames_uint8(video)
    assert got.dtype == torch.uint8 and tuple(got.shape) == (5, 8, 12, 3)
    assert np.array_equal(got.numpy(), want)
    (host,), event = to_host(got)
    assert host is got and event is None  # CPU frames are handed over as they are


class Recorder:
    def __init__(self, fail_at: int | None = None, gate: threading.Event | None = None):
        self.written: list[np.ndarray] = []
        self.fail_at, self.gate = fail_at, gate

    def write(self, frames):
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_at is not None and len(self.written) == self.fail_at:
            raise OSError(28, "No space left on device")
        self.written.append(to_uint8_frames(frames))


def test_everything_handed_over_is_written_in_order_then_followed_up():
    rec, done = Recorder(gate=threading.Event()), []
    bg = BackgroundWriter(rec, depth=2)
    chunks = [torch.full((2, 4, 4, 3), i, dtype=torch.uint8) for i in range(5)]
    for i, c in enumerate(chunks[:2]):
        bg.put(c, None, lambda i=i: done.append((i, len(rec.written))))
    assert rec.written == []  # the writer is held: nothing is written yet, put did not block
    rec.gate.set()
    for i, c in enumerate(chunks[2:], 2):
        bg.put(c, None, lambda i=i: done.append((i, len(rec.written))))
    bg.close()
    assert [int(w[0, 0, 0, 0]) for w in rec.written] == [0, 1, 2, 3, 4]
    assert done == [(i, i + 1) for i in range(5)]  # each follow-up after its own frames


def test_a_writer_error_reaches_the_caller_and_later_chunks_are_dropped():
    rec, done = Recorder(fail_at=1), []
    bg = BackgroundWriter(rec, depth=1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(20):  # the producer never blocks forever after the failure
            bg.put(torch.zeros(1, 2, 2, 3, dtype=torch.uint8), None, lambda i=i: done.append(i))
        bg.close()
    with pytest.raises(OSError):
        bg.close()
    assert len(rec.written) == 1 and done == [0]  # no state is saved for unwritten frames


def test_x264_preset_is_a_writer_option(tmp_path):
    pytest.importorskip("av")
    from adastate_core.io import open_writer, read_frames
    from adastate_core.io.video import VideoIOError

    frames = torch.randint(0, 255, (6, 32, 48, 3), dtype=torch.uint8)
    sizes = {}
    for preset in ("veryfast", "medium"):
        path = tmp_path / f"{preset}.mp4"
        with open_writer(path, preset=preset) as writer:
            writer.write(frames)
        assert read_frames(path).shape == (6, 32, 48, 3)
        sizes[preset] = path.stat().st_size
    assert sizes["veryfast"] != sizes["medium"]  # the option reaches the encoder
    with pytest.raises(VideoIOError, match="preset must be one of"):
        open_writer(tmp_path / "x.mp4", preset="warp")


def test_fast_modes_bound_their_error_and_leave_the_exact_path_alone():
    """The opt-in fast modes of issue 11 change numbers by a measured amount; the default
    path is untouched (cuDNN-first attention is plain SDPA off CUDA)."""
    from adastate_core.model import load_dit
    from adastate_core.model.attention import sdpa, sdpa_cudnn_first
    from adastate_core.model.random_weights import TINY, random_state_dict

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 24, 4, 16, generator=g) for _ in range(3))
    assert torch.equal(sdpa_cudnn_first(q, k, v), sdpa(q, k, v))
    sd = random_state_dict(TINY, 0)
    hints = dict(num_heads=TINY.num_heads, text_len=TINY.text_len)
    exact = load_dit(sd, **hints)
    fast = load_dit(sd, precise_dtype="bf16", **hints)
    assert fast.blocks[0].modulation.dtype == torch.bfloat16
    x, c = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    a, b = exact(x, 500.0, c), fast(x, 500.0, c)
    rel = ((a - b).norm() / a.norm()).item()
    assert 1e-4 < rel < 0.02  # measured 0.6 % per call on this model
    cudnn = load_dit(sd, attention="cudnn", **hints)
    assert torch.equal(cudnn(x, 500.0, c), a)


@pytest.mark.slow
def test_compiled_blocks_stay_within_rounding_of_eager():
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on the CPU needs a C compiler")
    from adastate_core.model import load_dit
    from adastate_core.model.random_weights import TINY, random_state_dict

    sd = random_state_dict(TINY, 0)
    hints = dict(num_heads=TINY.num_heads, text_len=TINY.text_len)
    eager, fast = load_dit(sd, **hints), load_dit(sd, **hints).compile_blocks()
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(1, 16, 3, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    a, b = eager(x, 500.0, c), fast(x, 500.0, c)
    assert (a - b).abs().max().item() < 1e-4  # measured 1e-6


def test_consuming_decode_gives_the_same_frames_and_frees_the_old_cache():
    from adastate_core.vae import load_vae
    from adastate_core.vae.random_weights import random_state_dict as random_vae

    vae = load_vae(random_vae(dim=8, seed=2))
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 16, 6, 4, 6, generator=g)
    video0, keep = vae.decode_chunk(z[:, :, :3], None)
    _, give = vae.decode_chunk(z[:, :, :3], None)
    want, want_cache = vae.decode_chunk(z[:, :, 3:], keep)
    got, got_cache = vae.decode_chunk(z[:, :, 3:], give, consume=True)
    assert torch.equal(got, want)
    assert all(torch.equal(a, b) for a, b in zip(got_cache.histories, want_cache.histories))
    assert got_cache.latent_frames == want_cache.latent_frames == 6
    assert give.histories == () and len(keep.histories) == len(want_cache.histories)
