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


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_a_large_workflow_in_the_metadata_keeps_chunks_appendable(fmt, tmp_path):
    """ComfyUI embeds the whole workflow (often 50-500 KB). The MP4/WebM header then no longer
    fits the default 32 KB I/O buffer of a non-seekable sink, and the muxer left the header's
    size at 0: the second chunk was refused as another encoder setup. Any size works."""
    meta = {**METADATA, "workflow": '{"nodes": [' + ", ".join(["{}"] * 60000) + "]}"}
    path = out_path(tmp_path, fmt)
    with open_writer(path, fps=FPS, metadata=meta) as writer:
        for chunk in chunks():
            writer.write(chunk)
    assert count_frames(path) == sum(CHUNKS)
    assert read_metadata(path) == meta


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


# ----------------------------------------------------------------------------------------------
# resuming: open_writer(..., resume_frames=N) continues a file after its first N frames


def write_chunks(path: Path, parts, metadata=METADATA) -> None:
    with open_writer(path, fps=FPS, metadata=metadata) as writer:
        for part in parts:
            writer.write(part)


def contents(path: Path, fmt: str) -> dict[str, bytes]:
    """The bytes of the video (PNG: of each of its frame files), by file name."""
    files = sorted(path.parent.glob(f"{path.stem}_*")) if fmt == "png" else [path]
    return {file.name: file.read_bytes() for file in files}


def new_out_path(tmp_path: Path, name: str, fmt: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    return out_path(folder, fmt)


def uninterrupted(tmp_path: Path, fmt: str, parts, metadata=METADATA) -> Path:
    """`parts` written by one writer that never stopped."""
    path = new_out_path(tmp_path, "uninterrupted", fmt)
    write_chunks(path, parts, metadata)
    return path


def assert_same_video(got: Path, want: Path, fmt: str) -> None:
    """Identical decoded frames and metadata, and identical bytes (every format achieves it)."""
    assert np.array_equal(read_frames(got), read_frames(want))
    assert read_metadata(got) == read_metadata(want)
    assert contents(got, fmt) == contents(want, fmt)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_resume_gives_the_file_of_an_uninterrupted_run(fmt, tmp_path):
    want = uninterrupted(tmp_path, fmt, chunks())
    path = new_out_path(tmp_path, "resumed", fmt)
    parts = chunks()
    write_chunks(path, parts[:2])
    with open_writer(path, fps=FPS, resume_frames=sum(CHUNKS[:2])) as writer:
        assert (writer.frames_written, writer.chunks_written) == (sum(CHUNKS[:2]), 2)
        assert writer.size == (H, W)
        assert writer.metadata == METADATA  # taken from the file
        writer.write(parts[2])
    assert writer.frames_written == sum(CHUNKS)
    assert_same_video(path, want, fmt)


def kill_child_after_writes(path: Path, tmp_path: Path, first: int, second: int) -> None:
    """Run CHILD (writes `first` then `second` frames of EXPECTED) and SIGKILL it after both."""
    frames_file = tmp_path / "frames.npy"
    np.save(frames_file, EXPECTED)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    args = [sys.executable, "-c", CHILD, str(path), str(frames_file), str(first), str(second)]
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


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_resume_after_sigkill_drops_the_chunk_written_after_the_state(fmt, tmp_path):
    """The run state was saved after the first chunk; the killed run wrote a second one. Resuming
    at the state drops that chunk, and the resumed run rewrites it as the state dictates."""
    metadata = {"prompt": "killed"}  # CHILD's
    want = uninterrupted(tmp_path, fmt, [EXPECTED[:9], EXPECTED[9:21], EXPECTED[21:]], metadata)
    path = new_out_path(tmp_path, "resumed", fmt)
    kill_child_after_writes(path, tmp_path, 9, 12)
    assert count_frames(path) == 21
    with open_writer(path, fps=FPS, metadata={"prompt": "ignored"}, resume_frames=9) as writer:
        assert writer.metadata == metadata  # the file's metadata is kept
        assert count_frames(path) == 9
        writer.write(EXPECTED[9:21])
        writer.write(EXPECTED[21:])
    assert_same_video(path, want, fmt)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_resume_after_a_kill_inside_a_write(fmt, fraction, tmp_path, monkeypatch):
    """A kill in the middle of the third write (as in the test above that simulates one)
    leaves a torn tail; resuming after the second write cuts it off."""
    want = uninterrupted(tmp_path, fmt, chunks())
    path = new_out_path(tmp_path, "resumed", fmt)
    writer = open_writer(path, fps=FPS, metadata=METADATA)
    parts = chunks()
    writer.write(parts[0])
    writer.write(parts[1])

    def torn_append(self, data, commits=()):
        self._file.seek(self._end)
        self._file.write(data[: int(fraction * len(data))])
        self._file.flush()
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(video._FileWriter, "_append", torn_append)
        with pytest.raises(_Killed):
            writer.write(parts[2])
    with open_writer(path, fps=FPS, resume_frames=sum(CHUNKS[:2])) as resumed:
        resumed.write(parts[2])
    assert_same_video(path, want, fmt)


def test_png_resume_after_a_kill_inside_a_write(tmp_path, monkeypatch):
    want = uninterrupted(tmp_path, "png", chunks())
    path = new_out_path(tmp_path, "resumed", "png")
    writer = open_writer(path, fps=FPS, metadata=METADATA)
    parts = chunks()
    writer.write(parts[0])
    writer.write(parts[1])
    replace, done = os.replace, []

    def dying_replace(src, dst):  # killed before the 4th frame of the write is renamed
        if len(done) == 3:
            raise _Killed
        replace(src, dst)
        done.append(dst)

    with monkeypatch.context() as patch:
        patch.setattr(video.os, "replace", dying_replace)
        with pytest.raises(_Killed):
            writer.write(parts[2])
    assert count_frames(path) == sum(CHUNKS[:2]) + 3
    assert (path.parent / "clip_00025.png.partial").exists()
    with open_writer(path, fps=FPS, resume_frames=sum(CHUNKS[:2])) as resumed:
        assert count_frames(path) == sum(CHUNKS[:2])
        assert not list(path.parent.glob("*.partial"))
        resumed.write(parts[2])
    assert_same_video(path, want, "png")


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_a_kill_while_resuming_leaves_a_file_that_resumes(fmt, tmp_path, monkeypatch):
    """Killed after resuming uncommitted the dropped chunk (GIF/WebP) but before cutting it off:
    the file still plays, and resuming again gives the same file as ever."""
    want = uninterrupted(tmp_path, fmt, chunks())
    path = new_out_path(tmp_path, "resumed", fmt)
    write_chunks(path, chunks())

    def killed_fsync(file):
        file.flush()
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(video, "_fsync", killed_fsync)
        with pytest.raises(_Killed):
            open_writer(path, fps=FPS, resume_frames=sum(CHUNKS[:2]))
    assert count_frames(path) == (sum(CHUNKS[:2]) if fmt in ("gif", "webp") else sum(CHUNKS))
    with open_writer(path, fps=FPS, resume_frames=sum(CHUNKS[:2])) as writer:
        writer.write(chunks()[2])
    assert_same_video(path, want, fmt)


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_failed_resumes_say_what_to_do_and_change_nothing(fmt, tmp_path):
    path = out_path(tmp_path, fmt)
    write_chunks(path, chunks())
    before = contents(path, fmt)
    start_new = "start a new video instead"
    failures = [
        ({"resume_frames": 5}, r"at frame 5: no write ended there \(writes ended after frames 9"),
        ({"resume_frames": 22}, r"no write ended there \(writes ended after frames 9, 21, 33\)"),
        ({"resume_frames": 40}, r"at frame 40: .*holds only 33 .*frames"),
    ]
    if fmt != "png":  # PNG frames carry no frame rate
        failures.append(({"fps": 24, "resume_frames": 9}, r"16(\.\d+)? fps, not fps=24"))
    for kwargs, match in failures:
        with pytest.raises(VideoIOError, match=match) as error:
            open_writer(path, **{"fps": FPS, **kwargs})
        assert start_new in str(error.value)
        assert contents(path, fmt) == before
    with open_writer(path, fps=FPS, resume_frames=9) as writer:  # a good resume still works
        with pytest.raises(VideoIOError, match=r"32x48 frames.*64x96"):
            writer.write(EXPECTED[:2, :32, :48])  # the size is the file's
    assert count_frames(path) == 9
    assert_frames_close(path, fmt, 9)


def write_foreign(path: Path, fmt: str) -> None:
    """A video of the format written by something else (Pillow, or PyAV's own muxer)."""
    from PIL import Image

    if fmt == "png":
        Image.fromarray(EXPECTED[0]).save(path.with_name(f"{path.stem}_00001.png"))
    elif fmt in ("gif", "webp"):
        images = [Image.fromarray(frame) for frame in EXPECTED[:4]]
        images[0].save(path, save_all=True, append_images=images[1:], duration=62)
    else:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264" if fmt == "mp4" else "libvpx-vp9", rate=FPS)
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
            for frame in EXPECTED[:4]:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode(None))


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_resume_refuses_videos_of_another_format_or_writer(fmt, tmp_path):
    foreign = new_out_path(tmp_path, "foreign", fmt)
    write_foreign(foreign, fmt)
    before = contents(foreign, fmt)
    with pytest.raises(VideoIOError, match=rf"not written by AdaState's \.{fmt} video writer"):
        open_writer(foreign, resume_frames=1)
    assert contents(foreign, fmt) == before
    if fmt == "png":
        return
    other = FILE_FORMATS[(FILE_FORMATS.index(fmt) + 1) % len(FILE_FORMATS)]
    path = new_out_path(tmp_path, "other", other)
    write_chunks(path, chunks()[:1])
    before = contents(path, other)
    with pytest.raises(VideoIOError, match=rf"not written by AdaState's \.{fmt} .*start a new"):
        open_writer(path, format=fmt, resume_frames=CHUNKS[0])
    assert contents(path, other) == before


@pytest.mark.parametrize("fmt", list(SUFFIX))
def test_resume_of_a_missing_video_says_so(fmt, tmp_path):
    path = tmp_path / "missing" / f"clip{SUFFIX[fmt]}"
    with pytest.raises(VideoIOError, match=r"does not exist|holds no frames named clip_\*\.png"):
        open_writer(path, resume_frames=9)
    assert not path.parent.exists()  # nothing created


def test_bad_resume_frames(tmp_path):
    path = tmp_path / "clip.gif"
    write_chunks(path, chunks()[:1])
    for value in (-1, 2.5, True, "9"):
        with pytest.raises(VideoIOError, match="resume_frames must be a whole number"):
            open_writer(path, resume_frames=value)
    with open_writer(path, resume_frames=np.int64(9)) as writer:
        assert writer.frames_written == 9


def test_mp4_resume_needs_the_same_crf(tmp_path):
    path = tmp_path / "clip.mp4"
    write_chunks(path, chunks()[:1])
    with pytest.raises(VideoIOError, match=r"other settings than fps=16, crf=30.*first run's"):
        open_writer(path, fps=FPS, crf=30, resume_frames=CHUNKS[0])
    assert count_frames(path) == CHUNKS[0]


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_a_long_chunk_with_a_cut_is_one_write(fmt, tmp_path):
    """A chunk longer than the encoders' lookahead (x264: 40 frames, VP9: 25) with a hard cut in
    it (an extra keyframe: MP4 stays one fragment, WebM may start a cluster) is one write."""
    noise = np.random.default_rng(0).integers(0, 256, (30, H, W, 3), dtype=np.uint8)
    long_chunk = np.concatenate([np.rint(pattern(30, start=9) * 255).astype(np.uint8), noise])
    path = out_path(tmp_path, fmt)
    write_chunks(path, [EXPECTED[:9], long_chunk])
    assert count_frames(path) == 69
    with pytest.raises(
        VideoIOError, match=r"no write ended there \(writes ended after frames 9, 69"
    ):
        open_writer(path, fps=FPS, resume_frames=39)
    with open_writer(path, fps=FPS, resume_frames=69) as writer:
        writer.write(EXPECTED[:3])
    assert count_frames(path) == 72
