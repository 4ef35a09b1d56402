"""Progressive video writers (adastate_core.io.video): every format round-trips frames, fps and
metadata, and the file on disk is playable after every write, after a SIGKILL between writes
and after a kill in the middle of a write."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from adastate_core.errors import AdaStateError
from adastate_core.io import (
    VideoIOError,
    count_frames,
    open_writer,
    read_frames,
    read_metadata,
    to_uint8_frames,
    video,
)

av = pytest.importorskip("av", reason="PyAV is not installed (pip install av)")

REPO = Path(__file__).resolve().parents[1]
CHUNKS = (9, 12, 12)  # frames per write: a short first chunk, then full ones
H, W = 64, 96
FPS = 16
SUFFIX = {"mp4": ".mp4", "webm": ".webm", "webp": ".webp", "gif": ".gif", "png": ".png"}
FILE_FORMATS = ("mp4", "webm", "webp", "gif")
# (largest mean |error| of any frame, 99th percentile |error|) in 0..255 at the default quality;
# the smooth test pattern gives about a third of these
TOLERANCE = {"mp4": (5, 16), "webm": (5, 16), "webp": (5, 16), "gif": (14, 48), "png": (0, 0)}
METADATA = {"prompt": 'a red fox <runs> & "jumps" — ünïcode 🦊', "seed": "1234", "steps": "4"}


def pattern(count: int, start: int = 0) -> np.ndarray:
    """A smooth moving colour pattern, float32 [count, H, W, 3] in 0..1."""
    t = np.arange(start, start + count, dtype=np.float32)[:, None, None]
    y = np.arange(H, dtype=np.float32)[None, :, None] / H
    x = np.arange(W, dtype=np.float32)[None, None, :] / W
    channels = (
        0.5 + 0.45 * np.sin(6 * x + 0.3 * t),
        0.5 + 0.45 * np.cos(5 * y - 0.2 * t),
        0.5 + 0.45 * np.sin(4 * (x + y) + 0.1 * t),
    )
    return np.stack([np.broadcast_to(c, (count, H, W)) for c in channels], -1)


FRAMES = pattern(sum(CHUNKS))
EXPECTED = np.rint(FRAMES * 255).astype(np.uint8)


def chunks() -> list[np.ndarray | torch.Tensor]:
    """The three writes, in the three input kinds: float numpy, float torch, uint8 numpy."""
    a, b = CHUNKS[0], CHUNKS[0] + CHUNKS[1]
    return [FRAMES[:a], torch.from_numpy(FRAMES[a:b].copy()), EXPECTED[b:]]


def out_path(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"clip{SUFFIX[fmt]}"


def assert_frames_close(path: Path, fmt: str, count: int) -> None:
    """`path` decodes to exactly the first `count` test frames, within the format's tolerance."""
    got = read_frames(path)
    assert got.shape == (count, H, W, 3)
    assert got.dtype == np.uint8
    err = np.abs(got.astype(np.int16) - EXPECTED[:count].astype(np.int16))
    frame_mean, p99 = TOLERANCE[fmt]
    assert err.mean(axis=(1, 2, 3)).max() <= frame_mean, err.mean(axis=(1, 2, 3))
    assert np.percentile(err, 99) <= p99


def fps_of(path: Path, fmt: str) -> float:
    if fmt in ("webp", "gif"):  # whole-ms / whole-cs frame durations: 62, 63, ... / 6, 6, 7, ...
        from PIL import Image, ImageSequence

        durations = []
        with Image.open(path) as image:
            for frame in ImageSequence.Iterator(image):
                frame.load()  # Pillow fills in the frame duration on load
                durations.append(frame.info["duration"])
        return 1000 * len(durations) / sum(durations)
    with av.open(str(path)) as container:
        return float(container.streams.video[0].average_rate or Fraction(0))


def snapshot(path: Path, fmt: str, tmp_path: Path) -> Path:
    """A copy of the file as it is now (what a crash at this moment would leave)."""
    if fmt == "png":
        return path  # frames are separate files: the folder is its own snapshot
    copy = tmp_path / f"snapshot{SUFFIX[fmt]}"
    shutil.copyfile(path, copy)
    return copy


# ----------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_chunks_round_trip_and_are_playable_after_every_write(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    written = 0
    with open_writer(path, fps=FPS, metadata=METADATA) as writer:
        for chunk in chunks():
            writer.write(chunk)
            written += len(chunk)
            assert writer.frames_written == written
            assert count_frames(snapshot(path, fmt, tmp_path)) == written
    assert writer.closed
    assert count_frames(path) == sum(CHUNKS)
    assert_frames_close(path, fmt, sum(CHUNKS))
    if fmt != "png":  # PNG frames carry no frame rate
        assert fps_of(path, fmt) == pytest.approx(FPS, rel=0.02)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_metadata_round_trip(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    with open_writer(path, metadata=METADATA) as writer:
        writer.write(EXPECTED[:2])
    assert read_metadata(path) == METADATA


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_metadata_keys_are_also_plain_container_tags(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    with open_writer(path, metadata=METADATA) as writer:
        writer.write(EXPECTED[:2])
    with av.open(str(path)) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
    assert tags["prompt"] == METADATA["prompt"]
    assert tags["seed"] == "1234"


def test_png_frame_layouts(tmp_path):
    with open_writer(tmp_path / "shot.png") as writer:
        writer.write(EXPECTED[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "shot_00001.png",
        "shot_00002.png",
        "shot_00003.png",
    ]
    folder = tmp_path / "frames"  # no suffix: a folder of frame_NNNNN.png
    with open_writer(folder) as writer:
        writer.write(EXPECTED[:2])
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00001.png", "frame_00002.png"]
    assert np.array_equal(read_frames(folder), EXPECTED[:2])


def test_frames_are_rounded_and_clamped():
    values = torch.tensor([-0.5, 0.0, 0.5 / 255 + 1e-4, 0.5, 1.0, 2.0, float("nan")])
    frames = values.view(1, 1, -1, 1).expand(1, 1, -1, 3)
    assert to_uint8_frames(frames)[0, 0, :, 0].tolist() == [0, 0, 1, 128, 255, 255, 0]
    assert to_uint8_frames(frames.to(torch.bfloat16)).dtype == np.uint8
    assert np.array_equal(to_uint8_frames(EXPECTED[:2]), EXPECTED[:2])


# ----------------------------------------------------------------------------------------------
# crash safety


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from adastate_core.io import open_writer

    path, frames_file, first, second = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    frames = np.load(frames_file)
    writer = open_writer(path, fps=16, metadata={"prompt": "killed"})
    for chunk in (frames[:first], frames[first:first + second]):
        writer.write(chunk)
        print("wrote", flush=True)
    time.sleep(120)  # killed here, before close()
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_sigkill_after_two_writes_leaves_both_chunks(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    frames_file = tmp_path / "frames.npy"
    np.save(frames_file, EXPECTED)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-c", CHILD, str(path), str(frames_file), *map(str, CHUNKS[:2])]
    child = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        for _ in range(2):
            line = child.stdout.readline()
            assert line.strip() == "wrote", child.stderr.read() if not line else line
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
        child.stderr.close()
    assert count_frames(path) == sum(CHUNKS[:2])
    assert_frames_close(path, fmt, sum(CHUNKS[:2]))
    assert read_metadata(path) == {"prompt": "killed"}


class _Killed(BaseException):
    pass


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.97, 1.0])
@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_kill_inside_a_write_keeps_the_earlier_chunks(fmt, fraction, tmp_path, monkeypatch):
    """Simulate a kill in the middle of the third write: only `fraction` of its appended bytes
    reach the disk and none of its commit patches do."""
    path = out_path(tmp_path, fmt)
    writer = open_writer(path)
    parts = chunks()
    writer.write(parts[0])
    writer.write(parts[1])

    def torn_append(self, data, commits=()):
        self._file.seek(self._end)
        self._file.write(data[: int(fraction * len(data))])
        self._file.flush()
        raise _Killed

    monkeypatch.setattr(video._FileWriter, "_append", torn_append)
    with pytest.raises(_Killed):
        writer.write(parts[2])
    earlier = sum(CHUNKS[:2])
    got = read_frames(path)
    # WebM may also show the complete frames of the torn cluster; never fewer than before
    assert earlier <= len(got) <= sum(CHUNKS)
    if fmt != "webm":
        assert len(got) == earlier
    assert_frames_close_prefix(got[:earlier], fmt)


def assert_frames_close_prefix(got: np.ndarray, fmt: str) -> None:
    err = np.abs(got.astype(np.int16) - EXPECTED[: len(got)].astype(np.int16))
    assert err.mean(axis=(1, 2, 3)).max() <= TOLERANCE[fmt][0]


# ----------------------------------------------------------------------------------------------
# misuse and errors


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_bad_chunk_raises_and_keeps_earlier_frames(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    with open_writer(path) as writer:
        writer.write(EXPECTED[:5])
        with pytest.raises(VideoIOError, match=r"32x48 frames.*64x96"):
            writer.write(EXPECTED[:2, :32, :48])
        assert count_frames(snapshot(path, fmt, tmp_path)) == 5
        with pytest.raises(VideoIOError, match=r"\[T, H, W, 3\].*\[64, 96, 3\].*frames\[None\]"):
            writer.write(EXPECTED[0])
        with pytest.raises(VideoIOError, match="float in 0..1 or uint8.*int64"):
            writer.write(EXPECTED[:2].astype(np.int64))
        writer.write(EXPECTED[5:8])  # the writer still works
    assert count_frames(path) == 8


def test_close_twice_is_harmless_and_write_after_close_raises(tmp_path):
    writer = open_writer(tmp_path / "clip.gif")
    writer.write(EXPECTED[:2])
    writer.close()
    writer.close()
    with pytest.raises(VideoIOError, match="closed"):
        writer.write(EXPECTED[:2])
    assert count_frames(tmp_path / "clip.gif") == 2


def test_unknown_suffix_lists_the_supported_ones(tmp_path):
    with pytest.raises(VideoIOError, match=r"'\.avi'.*\.mp4, \.webm, \.webp, \.gif, \.png"):
        open_writer(tmp_path / "clip.avi")
    with pytest.raises(VideoIOError, match="unknown video format 'mkv'"):
        open_writer(tmp_path / "clip.mp4", format="mkv")


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_unwritable_path_names_it(fmt, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    target = blocker / f"clip{SUFFIX[fmt]}"
    with pytest.raises(VideoIOError, match=f"{blocker}.*not writable"):
        open_writer(target)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write to read-only dirs"
)
def test_read_only_folder_is_reported(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(VideoIOError, match="locked.*not writable"):
            open_writer(folder / "clip.mp4")
    finally:
        folder.chmod(0o700)


def test_odd_size_mp4_is_rejected_with_the_size(tmp_path):
    with open_writer(tmp_path / "clip.mp4") as writer:
        with pytest.raises(VideoIOError, match=r"63x95 \(H x W\).*even"):
            writer.write(EXPECTED[:2, :63, :95])
    with open_writer(tmp_path / "clip.webm") as writer:  # VP9 handles odd sizes
        writer.write(EXPECTED[:2, :63, :95])
    assert read_frames(tmp_path / "clip.webm").shape == (2, 63, 95, 3)


def test_bad_settings(tmp_path):
    with pytest.raises(VideoIOError, match="crf for mp4 must be an integer 0..51"):
        open_writer(tmp_path / "a.mp4", crf=70)
    with pytest.raises(VideoIOError, match="fps must be a positive number"):
        open_writer(tmp_path / "a.gif", fps=0)
    with pytest.raises(VideoIOError, match="metadata key 'adastate' cannot be used"):
        open_writer(tmp_path / "a.gif", metadata={"adastate": "x"})


def test_png_frames_from_an_earlier_run_are_not_mixed_in(tmp_path):
    with open_writer(tmp_path / "shot.png") as writer:
        writer.write(EXPECTED[:2])
    with pytest.raises(VideoIOError, match="already holds 2 frames named shot_\\*.png"):
        open_writer(tmp_path / "shot.png")


def test_missing_pyav_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(VideoIOError, match="pip install av"):
        open_writer(tmp_path / "clip.mp4")
    with open_writer(tmp_path / "clip.gif") as writer:  # formats written without PyAV still work
        writer.write(EXPECTED[:2])


def test_errors_are_adastate_errors():
    assert issubclass(VideoIOError, AdaStateError)
