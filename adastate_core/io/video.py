"""Video writers that put every chunk on disk as it is written.

A stream makes video chunk by chunk; a run that is interrupted, crashes or is killed (even with
SIGKILL) must leave a playable file holding every frame written so far. Each `write()`
therefore encodes its frames completely in memory and then *appends* a self-contained piece
to the file, flushed and fsync'ed before `write()` returns:

=========  ===============================================================================
suffix     what each write appends
=========  ===============================================================================
``.mp4``   H.264 (libx264, yuv420p, ``crf``) in fragmented MP4: one ``moof``+``mdat``
           fragment (the whole chunk, numbered by the write in ``mfhd``) that starts with a
           keyframe; the first write also writes ``ftyp``+``moov``.
``.webm``  VP9 (libvpx-vp9, ``crf``) in a live-style WebM (segment of unknown size): a
           ``Void`` element holding ``AdaState write`` and the frame count, then Matroska
           ``Cluster`` elements, the first starting with a keyframe.
``.webp``  animated WebP: one ``ANMF`` chunk per frame (lossy, quality ``WEBP_QUALITY``; the
           first one ends with an ``ADSW`` chunk holding the frame count), then the RIFF size in
           the header is updated.
``.gif``   animated GIF: one image block per frame (256-colour palette per frame), written
           over the previous trailer byte (which becomes a " " comment) and followed by a new
           trailer.
``.png``   PNG frames: ``clip.png`` means the files ``clip_00001.png``, ``clip_00002.png``, ...
           beside it; a directory (an existing one, or a path with no suffix) means
           ``<dir>/frame_00001.png``, ...; each frame is written to a temporary name and renamed;
           the first one has a private ``adWr`` chunk holding the frame count.
=========  ===============================================================================

Why not let one FFmpeg muxer run for the whole video: the MP4 and Matroska muxers keep the
current fragment/cluster in memory until the *next* one starts, and PyAV exposes no muxer flush
(``av_write_frame(ctx, NULL)``). So each write runs a fresh encoder and muxer over its chunk and
the writer splices the result: it drops the repeated header and, for MP4, sets the fragment's
decode time (``tfdt``) to the frames written before. Every chunk starts with a keyframe.

Resuming: ``open_writer(path, resume_frames=N)`` continues a file after its first N frames, e.g.
when a run that saved its state after N frames is resumed after Ctrl-C, a crash or SIGKILL.
The writer parses the file and finds where each write ended (the fragment numbers, the write
markers above, the " " comments), checks that N is such a place, that the file was written by
this module and that the writer's settings make the same header (same fps and size; for MP4
the same encoder setup, crf included; the metadata is the file's), and only then cuts off what
follows write N: a chunk written after the state was saved, or the torn part of a write that
was killed (GIF/WebP first uncommit it by restoring the trailer byte/the RIFF size, so the
cutting off is crash-safe too; PNG frames are deleted last first). The writer then goes on as
the one that wrote the N frames would have, so the file ends up byte-identical to one from a
run that never stopped, in every format, given the same PyAV/FFmpeg and Pillow (the muxers run
``bitexact``: no random ids). Nothing is stored beside the file.

Metadata (prompt, seed, settings: a dict of strings) is stored as one JSON string under the key
``adastate`` (``read_metadata`` reads it back exactly) and, where the format has named tags,
also as one tag per key so that ``ffprobe``/``exiftool`` show them: MP4 ``udta`` tags, WebM
``Tags``, PNG ``iTXt`` chunks; GIF keeps the JSON in a comment extension and WebP in an XMP chunk.

Frames are ComfyUI ``IMAGE`` layout: ``[T, H, W, 3]`` float in 0..1 (rounded to 0..255) or uint8.
PyAV (``pip install av``) encodes MP4/WebM and decodes MP4/WebM/GIF; Pillow writes PNG, GIF and
WebP frames and decodes PNG and WebP (FFmpeg cannot decode animated WebP).
"""

from __future__ import annotations

import contextlib
import io
import json
import mmap
import operator
import os
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import numpy as np

from ..errors import AdaStateError

PathLike = str | os.PathLike

SUFFIXES = {".mp4": "mp4", ".webm": "webm", ".webp": "webp", ".gif": "gif", ".png": "png"}
FORMATS = ("mp4", "webm", "webp", "gif", "png")
WEBP_QUALITY = 90  # lossy WebP quality (0..100) used for every frame
METADATA_KEY = "adastate"  # the tag holding the whole metadata dict as JSON
PNG_DIGITS = 5  # frame numbers are zero-padded to at least this many digits
_TECHNICAL_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "creation_time"}
# swscale flags: area-averaged chroma, exact rounding (the defaults bias colours by ~1 level)
_SWS_ENCODE = ("AREA", "ACCURATE_RND")
_SWS_DECODE = ("BILINEAR", "ACCURATE_RND", "FULL_CHR_H_INT")
_XMP_NS = "https://github.com/adastate/ComfyUI-AdaState/ns/1.0/"
# where each write starts, for resuming (see `open_writer`): WebM: a Void element holding
# _WRITE_MARK + the write's frame count; WebP: a chunk in the write's first ANMF; PNG: a private
# chunk in the write's first frame; GIF: the " " comment that joins a write to the one before
_WRITE_MARK = b"AdaState write"
_WEBP_WRITE_CHUNK = b"ADSW"
_PNG_WRITE_CHUNK = b"adWr"  # ancillary, private, safe to copy
_GIF_SEPARATOR = b"\x21\xfe\x01 \x00"


class VideoIOError(AdaStateError):
    """A video file that cannot be written or read as asked."""


class OutputExistsError(VideoIOError, FileExistsError):
    """`open_writer(..., exclusive=True)` found something at the path (a file, a link or a
    folder): nothing was written; pick another name."""


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoIOError(
            "writing .mp4/.webm and reading .mp4/.webm/.gif need PyAV: pip install av "
            "(its wheel bundles FFmpeg); or write PNG frames instead"
        ) from None
    return av


# ----------------------------------------------------------------------------------------------
# frames and small helpers shared by the writers


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Frames as a C-contiguous uint8 array `[T, H, W, 3]`.

    frames: torch tensor or numpy array `[T, H, W, 3]`, float in 0..1 (values outside are
    clamped; each becomes round(x * 255)) or uint8 (kept as is).
    """
    if hasattr(frames, "detach"):  # a torch tensor; torch is not imported for numpy input
        tensor = frames.detach().cpu()
        frames = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        hint = " (one frame? add a leading axis: frames[None])" if array.ndim == 3 else ""
        hint += (
            " (RGBA? drop the alpha channel: frames[..., :3])" if array.shape[-1:] == (4,) else ""
        )
        raise VideoIOError(
            f"video frames must be [T, H, W, 3] (ComfyUI IMAGE layout), got shape "
            f"{list(array.shape)}{hint}"
        )
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise VideoIOError(
            f"video frames must be float in 0..1 or uint8, got dtype {array.dtype}; "
            "convert them first (e.g. frames.float() / 255)"
        )
    array = np.nan_to_num(array.astype(np.float32), nan=0.0)
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _sws_flags(av: Any, names: tuple[str, ...]) -> int:
    interpolation = av.video.reformatter.Interpolation
    return sum(int(interpolation[name]) for name in names)


def _as_rate(fps: float | Fraction) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        rate = Fraction(0)
    if rate <= 0:
        raise VideoIOError(f"fps must be a positive number, got {fps!r}")
    return rate


def _frame_durations(start: int, count: int, rate: Fraction, unit: int) -> list[int]:
    """Whole-`1/unit`-second durations of frames start..start+count-1 whose sum never drifts
    from the true timeline (16 fps in ms: 62, 63, 62, 63, ...)."""
    edges = [round((start + i) * unit / rate) for i in range(count + 1)]
    return [max(1, b - a) for a, b in zip(edges, edges[1:])]


def _metadata_tags(metadata: dict[str, str]) -> dict[str, str]:
    """The tags to store: one per key (sorted, so that the metadata read back from a file makes
    the same header) plus the whole dict as JSON under `METADATA_KEY`."""
    tags = dict(sorted(metadata.items()))
    tags[METADATA_KEY] = json.dumps(metadata, ensure_ascii=False, sort_keys=True)
    return tags


def _stored_metadata(tags: dict[str, str]) -> dict[str, str] | None:
    """The metadata dict stored under `METADATA_KEY` in `tags`, or None if there is none."""
    for key, value in tags.items():
        if key.lower() == METADATA_KEY:
            try:
                metadata = json.loads(value)
            except ValueError:
                return None
            if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values()):
                return metadata
    return None


def _metadata_from_tags(tags: dict[str, str]) -> dict[str, str]:
    for key, value in tags.items():
        if key.lower() == METADATA_KEY:
            return json.loads(value)
    return {k: v for k, v in tags.items() if k.lower() not in _TECHNICAL_TAGS}


def _check_metadata(metadata: dict[str, Any] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise VideoIOError(f"metadata must be a dict of strings, got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or key.lower() == METADATA_KEY:
            raise VideoIOError(
                f"metadata key {key!r} cannot be used: keys must be non-empty strings other "
                f"than {METADATA_KEY!r}"
            )
        out[key] = value if isinstance(value, str) else str(value)
    return out


def _fsync(file: Any) -> None:
    file.flush()
    os.fsync(file.fileno())


@contextlib.contextmanager
def _mapped(file: Any) -> Iterator[Any]:
    """The whole of the open binary `file`, read-only, as a bytes-like object (an mmap, so that
    parsing a large video reads only the parts it looks at)."""
    if os.fstat(file.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


class _Sink:
    """A write-only, unseekable file object for PyAV: makes the muxers write live-style
    output (MP4 with an empty moov, WebM with a segment of unknown size)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


# ----------------------------------------------------------------------------------------------
# writers


class VideoWriter:
    """Writes frames progressively; use `open_writer` to make one.

    After every `write` the file on disk is a playable video of all frames written so far, so an
    interrupted run keeps them. `close` (or leaving a `with` block) ends the writer; closing twice
    is harmless and writing after close raises `VideoIOError`. A resumed writer
    (`open_writer(..., resume_frames=N)`) starts with `frames_written == N`, `chunks_written` the
    writes that made them, `size` and `metadata` those of the file.
    """

    format: str = ""

    def __init__(self, path: Path, *, fps: float, crf: int, metadata: dict[str, str]) -> None:
        self.path = path
        self.rate = _as_rate(fps)
        self.crf = crf
        self.metadata = metadata
        self.size: tuple[int, int] | None = None  # (H, W), fixed by the first write
        self.frames_written = 0
        self.chunks_written = 0  # writes that added frames
        self.closed = False

    @property
    def fps(self) -> float:
        return float(self.rate)

    def write(self, frames: Any) -> None:
        """Append `frames` ([T, H, W, 3], float 0..1 or uint8) and flush them to disk.

        A bad chunk (wrong shape, dtype or size) raises `VideoIOError` before the file is
        touched, so the frames written earlier stay playable.
        """
        if self.closed:
            raise VideoIOError(f"the video writer for {self.path} is closed; open a new one")
        array = to_uint8_frames(frames)
        if array.shape[0] == 0:
            return
        height, width = array.shape[1:3]
        if self.size is None:
            self._check_size(height, width)
            self.size = (height, width)
        elif self.size != (height, width):
            raise VideoIOError(
                f"cannot add {height}x{width} frames to {self.path}: its frames are "
                f"{self.size[0]}x{self.size[1]} (H x W) and every frame of a video must have "
                "the same size; resize the frames or start a new file"
            )
        self._write(array)
        self.frames_written += array.shape[0]
        self.chunks_written += 1

    def close(self) -> None:
        """Finish the file (everything is already on disk; this releases it)."""
        self.closed = True

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        size = "?" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return (
            f"{type(self).__name__}({str(self.path)!r}, {size}, {self.fps:g} fps, "
            f"{self.frames_written} frames{', closed' if self.closed else ''})"
        )

    # subclasses
    def _check_size(self, height: int, width: int) -> None:
        pass

    def _write(self, frames: np.ndarray) -> None:
        raise NotImplementedError

    # resuming
    def _cannot_resume(self, frames: int, reason: str, todo: str = "") -> VideoIOError:
        return VideoIOError(
            f"cannot resume {self.path} at frame {frames}: {reason}; " + (todo or self._start_new())
        )

    def _start_new(self) -> str:
        return f"start a new video instead (another file name, or replace {self.path} deliberately)"

    def _foreign(self, frames: int, reason: str) -> VideoIOError:
        return self._cannot_resume(
            frames,
            f"it was not written by AdaState's .{self.format} video writer, or it is damaged "
            f"({reason})",
        )

    def _resume_point(self, frames: int, ends: list[int]) -> int:
        """The index of the write after which the file holds exactly `frames` frames.

        ends: the frame count after each complete write, in order."""
        total = ends[-1] if ends else 0
        if frames > total:
            raise self._cannot_resume(
                frames,
                f"it holds only {total} complete frames (the run state is newer than the video, "
                "or belongs to another video)",
            )
        if frames not in ends:
            nearby = sorted(ends, key=lambda end: abs(end - frames))[:6]
            raise self._cannot_resume(
                frames,
                f"no write ended there (writes ended after frames "
                f"{', '.join(map(str, sorted(nearby)))}{', ...' if len(ends) > 6 else ''}); "
                "resume_frames must be the frame count of a run state saved with this video",
            )
        return ends.index(frames)

    def _check_durations(self, frames: int, stored: list[int], unit: int) -> None:
        """GIF/WebP: the first `frames` frame durations must be those this writer's fps gives."""
        if stored[:frames] != _frame_durations(0, frames, self.rate, unit):
            file_fps = frames * unit / max(1, sum(stored[:frames]))
            raise self._cannot_resume(
                frames,
                f"its frames are timed for about {file_fps:.4g} fps, not fps={self.fps:g}",
                f"resume with the fps of the first run, or {self._start_new()}",
            )


class _NotOurs(Exception):
    """A file to resume that this module did not write (the message says why)."""


@dataclass
class _Layout:
    """What a resumed file holds, as far as its writer needs to know."""

    size: tuple[int, int]  # (H, W)
    metadata: dict[str, str]
    header: bytes  # what the first write put before its frames
    ends: list[tuple[int, int]]  # (frames, file size) after each complete write, in order
    durations: list[int] = field(default_factory=list)  # GIF/WebP: each frame's, as stored
    fps: float | None = None  # MP4/WebM: the frame rate of the file
    write_durations: list[int] = field(default_factory=list)  # MP4: of each write's fragment


class _FileWriter(VideoWriter):
    """A writer of one file that only ever grows. Each write appends its bytes in a form that
    readers do not yet see, fsyncs them, then *commits* them by patching a few bytes in place
    (a box type, a size, a trailer byte), so even a kill in the middle of a write leaves the
    file as the previous write left it, plus unseen bytes.

    Resuming parses the file, checks that it is one this writer would have written, rolls back
    (uncommits) and cuts off everything after the write that ended at the resume frame, so the
    file is again exactly as that write left it."""

    def __init__(
        self, path: Path, *, resume_frames: int = 0, exclusive: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(path, **kwargs)
        self._end = 0  # file size after the last complete write
        if resume_frames:
            self._file = self._resume(resume_frames)
            return
        try:
            if exclusive:
                self._file = _create_exclusive(path)
            else:
                self._file = open(path, "wb")  # noqa: SIM115 - held open until close()
        except FileExistsError:
            raise OutputExistsError(
                f"{path} already exists; nothing was written (choose another name)"
            ) from None
        except OSError as err:
            raise _unwritable(path, err) from None

    def _append(self, data: bytes, commits: list[tuple[int, bytes]] = ()) -> None:
        """Append `data`, then write each (absolute offset, bytes) of `commits`."""
        start = self._end
        try:
            self._file.seek(start)
            self._file.write(data)
            self._sync()
            for offset, patch in commits:
                self._file.seek(offset)
                self._file.write(patch)
            if commits:
                self._sync()
        except OSError as err:
            try:  # drop the unseen bytes; the earlier frames stay playable
                self._file.truncate(start)
            except OSError:
                pass
            raise VideoIOError(f"could not write to {self.path}: {err.strerror or err}") from None
        self._end = start + len(data)

    def _sync(self) -> None:
        _fsync(self._file)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def _resume(self, frames: int) -> Any:
        """Open the file to continue after its first `frames` frames; returns the open file."""
        try:
            file = open(self.path, "r+b")  # noqa: SIM115 - held open until close()
        except FileNotFoundError:
            raise self._cannot_resume(
                frames, "the file does not exist", "start a new video instead"
            ) from None
        except OSError as err:
            raise _unwritable(self.path, err) from None
        try:
            with _mapped(file) as data:
                try:
                    layout = self._layout(data)
                except _NotOurs as err:
                    raise self._foreign(frames, str(err)) from None
                except (IndexError, ValueError, struct.error, ElementTree.ParseError) as err:
                    raise self._foreign(frames, f"unreadable: {err}") from None
            index = self._resume_point(frames, [count for count, _ in layout.ends])
            self.size, self.metadata = layout.size, layout.metadata
            self._check_resume(frames, layout)
            # nothing was changed so far; now uncommit what follows, then cut it off
            end = layout.ends[index][1]
            for offset, patch in self._uncommit(end):
                file.seek(offset)
                file.write(patch)
            _fsync(file)
            file.truncate(end)
            _fsync(file)
        except OSError as err:
            file.close()
            raise VideoIOError(f"could not write to {self.path}: {err.strerror or err}") from None
        except BaseException:
            file.close()
            raise
        self._end = end
        self.frames_written, self.chunks_written = frames, index + 1
        self._restore(layout, index)
        return file

    # subclasses: resuming
    def _layout(self, data: Any) -> _Layout:
        """Parse the file (bytes or mmap); raise `_foreign` if this writer did not write it."""
        raise NotImplementedError

    def _check_resume(self, frames: int, layout: _Layout) -> None:
        """Raise if this writer's settings would not continue the file as it was written."""

    def _uncommit(self, end: int) -> list[tuple[int, bytes]]:
        """(offset, bytes) patches that hide everything after `end` (a write's end)."""
        return []

    def _restore(self, layout: _Layout, index: int) -> None:
        """Take over the state the writer had after write `index`."""


class _PyAVWriter(_FileWriter):
    """MP4 and WebM: every write encodes its chunk with a fresh encoder+muxer into memory."""

    codec = ""
    container_format = ""
    max_crf = 51

    def __init__(self, path: Path, *, crf: int, **kwargs: Any) -> None:
        self._av = _import_av()
        if isinstance(crf, bool) or not (isinstance(crf, int) and 0 <= crf <= self.max_crf):
            raise VideoIOError(
                f"crf for {self.format} must be an integer 0..{self.max_crf} (lower is better "
                f"quality, 19 is the default), got {crf!r}"
            )
        self._moov = b""  # MP4: the moov box of the first write
        self._decode_time = 0  # MP4: the duration of all fragments so far, in track timescale
        super().__init__(path, crf=crf, **kwargs)

    def _encode(self, frames: np.ndarray) -> bytes:
        """One complete file of `frames` ([T, H, W, 3] uint8), timestamps continuing from
        `frames_written`."""
        av = self._av
        sink = _Sink()
        sws = _sws_flags(av, _SWS_ENCODE)
        # bitexact: no random track ids or library versions in the header, so that a header
        # made now equals the one in a file to resume
        options = {**self._mux_options(), "fflags": "+bitexact"}
        # the sink cannot seek, so a box's size can only be filled in while the box is still
        # in the I/O buffer: it must hold the whole header (the metadata, e.g. a ComfyUI
        # workflow of any size, is in it), or a large header gets a size of 0
        meta_bytes = sum(len(str(k)) + len(str(v).encode()) for k, v in self.metadata.items())
        buffer = max(1 << 16, 4 * meta_bytes + (1 << 20))
        with av.open(
            sink, "w", format=self.container_format, options=options, buffer_size=buffer
        ) as container:
            container.metadata.update(_metadata_tags(self.metadata))
            stream = container.add_stream(self.codec, rate=self.rate, options=self._codec_options())
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            # frames are timed in 1/fps; not `stream.time_base`, which the muxer changes (MP4:
            # 1/16384 for 16 fps) once the encoder's first packet makes it write the header
            time_base = 1 / self.rate
            stream.time_base = time_base
            self._configure(stream.codec_context)
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", interpolation=sws)
                frame.pts = self.frames_written + i
                frame.time_base = time_base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        return bytes(sink.data)

    def _configure(self, codec_context: Any) -> None:
        # BT.709 limited range, tagged, so players convert back with the matrix we used
        codec_context.color_range = 1  # MPEG (limited)
        codec_context.colorspace = 1  # BT.709
        codec_context.color_primaries = 1
        codec_context.color_trc = 1

    def _codec_options(self) -> dict[str, str]:
        raise NotImplementedError

    def _mux_options(self) -> dict[str, str]:
        return {}

    def _header_of(self, data: bytes) -> bytes:
        """The header part of a file made by `_encode`."""
        raise NotImplementedError

    def _check_resume(self, frames: int, layout: _Layout) -> None:
        if layout.fps is not None and abs(layout.fps / self.fps - 1) > 1e-4:
            raise self._cannot_resume(
                frames,
                f"it was written at {layout.fps:.6g} fps, not fps={self.fps:g}",
                f"resume with fps={layout.fps:.6g}, or {self._start_new()}",
            )
        # the header this writer makes now (from one black frame) must be the file's: same
        # frame rate, size, encoder setup and metadata
        height, width = layout.size
        if self._header_of(self._encode(np.zeros((1, height, width, 3), np.uint8))) != (
            layout.header
        ):
            raise self._cannot_resume(
                frames,
                f"it was written with other settings than fps={self.fps:g}, crf={self.crf} "
                "(or by another version of PyAV/FFmpeg)",
                f"resume with the first run's fps and crf, or {self._start_new()}",
            )


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow",
)  # fmt: skip


class _Mp4Writer(_PyAVWriter):
    format = "mp4"
    codec = "libx264"
    container_format = "mp4"
    max_crf = 51

    def __init__(self, path: Path, *, preset: str = "medium", **kwargs: Any) -> None:
        self.preset = preset
        super().__init__(path, **kwargs)

    def _check_size(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise VideoIOError(
                f"cannot write {height}x{width} (H x W) frames to {self.path}: H.264 yuv420p "
                "needs an even height and width; crop or resize the frames, or write .webm, "
                ".webp, .gif or .png instead"
            )

    def _codec_options(self) -> dict[str, str]:
        # no B-frames: presentation time = decode time, so the video starts at t = 0
        return {"crf": str(self.crf), "preset": self.preset, "bf": "0"}

    def _mux_options(self) -> dict[str, str]:
        # frag_custom: the whole chunk is one fragment (also when the encoder puts more
        # keyframes in it), numbered by its write, so the fragments are the writes
        return {
            "movflags": "frag_custom+empty_moov+default_base_moof+use_metadata_tags",
            "fragment_index": str(self.chunks_written + 1),
        }

    def _header_of(self, data: bytes) -> bytes:
        return b"".join(box for kind, box in _mp4_boxes(data) if kind in ("ftyp", "moov"))

    def _write(self, frames: np.ndarray) -> None:
        data = self._encode(frames)
        boxes = list(_mp4_boxes(data))
        piece = bytearray()
        commits = []
        for kind, box in boxes:
            if kind == "ftyp" and self.chunks_written == 0:
                piece += box
            elif kind == "moov" and self.chunks_written == 0:
                piece += box
                self._moov = box
            elif kind == "moov" and box != self._moov:
                # the first write's moov holds the decoder setup (SPS/PPS) for all fragments
                raise VideoIOError(
                    f"cannot add frames to {self.path}: the H.264 encoder setup differs from the "
                    "one the file starts with (another crf, or another version of PyAV/FFmpeg); "
                    "start a new output"
                )
            elif kind == "moof":  # written as a 'free' box; renamed 'moof' once all is on disk
                commits.append((self._end + len(piece) + 4, b"moof"))
                piece += _mp4_shift_decode_time(box, self._decode_time)
                piece[-len(box) + 4 : -len(box) + 8] = b"free"
            elif kind == "mdat":
                piece += box
        self._append(bytes(piece), commits)
        self._decode_time += sum(_mp4_fragment_duration(box) for k, box in boxes if k == "moof")

    def _layout(self, data: Any) -> _Layout:
        spans = list(_mp4_box_spans(data))
        if len(spans) < 2 or [kind for kind, _, _ in spans[:2]] != ["ftyp", "moov"]:
            raise _NotOurs("it does not start with the boxes ftyp, moov")
        _, moov_start, moov_size = spans[1]
        header = bytes(data[: moov_start + moov_size])
        moov = header[moov_start:]
        tkhd = _mp4_find(moov, "trak", "tkhd")
        mdhd = _mp4_find(moov, "trak", "mdia", "mdhd")
        if tkhd is None or mdhd is None:
            raise _NotOurs("its moov has no video track")
        width, height = (v >> 16 for v in struct.unpack_from(">II", tkhd, len(tkhd) - 8))
        timescale = struct.unpack_from(">I", mdhd, 28 if mdhd[8] == 1 else 20)[0]
        ends, durations, frames = [], [], 0
        for (kind, start, size), (next_kind, next_start, next_size) in zip(
            spans[2::2], spans[3::2]
        ):
            if kind != "moof" or next_kind != "mdat":  # 'free': a write that was not committed
                break
            moof = bytes(data[start : start + size])
            mfhd = _mp4_find(moof, "mfhd")
            tfdt = [box for kind, _, box in _mp4_traf_boxes(moof) if kind == "tfdt"]
            if mfhd is None or len(tfdt) != 1:
                raise _NotOurs("a fragment lacks its mfhd or tfdt box")
            sequence = struct.unpack_from(">I", mfhd, 12)[0]
            layout = ">Q" if tfdt[0][8] == 1 else ">I"
            decode_time = struct.unpack_from(layout, tfdt[0], 12)[0]
            if sequence != len(ends) + 1 or decode_time != sum(durations):
                raise _NotOurs(
                    f"fragment {len(ends) + 1} is numbered {sequence} or starts at {decode_time}"
                )
            frames += _mp4_sample_count(moof)
            durations.append(_mp4_fragment_duration(moof))
            ends.append((frames, next_start + next_size))
        fps = ends[0][0] * timescale / durations[0] if durations and durations[0] else None
        metadata = _stored_metadata(_mp4_header_tags(self._av, header))
        if metadata is None:
            raise _NotOurs(f"it holds no {METADATA_KEY!r} metadata tag")
        return _Layout((height, width), metadata, header, ends, fps=fps, write_durations=durations)

    def _restore(self, layout: _Layout, index: int) -> None:
        self._moov = dict(_mp4_boxes(layout.header))["moov"]
        self._decode_time = sum(layout.write_durations[: index + 1])


class _WebmWriter(_PyAVWriter):
    """WebM: every write appends a Void element holding `_WRITE_MARK` and its frame count (so
    that a resume finds where each write started and whether it is complete), then its
    clusters; the first write puts the header before it."""

    format = "webm"
    codec = "libvpx-vp9"
    container_format = "webm"
    max_crf = 63

    def _codec_options(self) -> dict[str, str]:
        return {"crf": str(self.crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}

    def _header_of(self, data: bytes) -> bytes:
        return _webm_split(data, self.path)[0]

    def _write(self, frames: np.ndarray) -> None:
        header, clusters = _webm_split(self._encode(frames), self.path)
        body = _WRITE_MARK + struct.pack(">I", len(frames))
        marker = bytes([_EBML_VOID, 0x80 | len(body)]) + body
        self._append((header if self.chunks_written == 0 else b"") + marker + clusters)

    def _layout(self, data: Any) -> _Layout:
        elements = _ebml_elements(data, 0, len(data))
        head = next(elements, None)
        segment = next(elements, None)
        if head is None or head[0] != _EBML_HEAD or segment is None or segment[0] != _EBML_SEGMENT:
            raise _NotOurs("it does not start with an EBML header and a segment")
        header_end = None
        writes: list[list[int]] = []  # [frames announced, frames found, end of last cluster]
        for element, start, body, end in _ebml_elements(data, segment[2], len(data)):
            if end > len(data):  # cut off by a kill
                break
            if element == _EBML_VOID and bytes(data[body:end]).startswith(_WRITE_MARK):
                header_end = start if header_end is None else header_end
                count = struct.unpack_from(">I", data, body + len(_WRITE_MARK))[0]
                writes.append([count, 0, end])
            elif element == _EBML_CLUSTER and writes:
                writes[-1][1] += sum(
                    1 for child in _ebml_elements(data, body, end) if child[0] in _EBML_BLOCKS
                )
                writes[-1][2] = end
            elif element == _EBML_CLUSTER or writes:
                break
        if header_end is None:
            raise _NotOurs("it has no AdaState write markers")
        header = bytes(data[:header_end])
        ends, frames = [], 0
        for announced, found, end in writes:
            if found != announced:  # a write cut off by a kill
                break
            frames += found
            ends.append((frames, end))
        track = _ebml_find(header, segment[2], len(header), 0x1654AE6B, 0xAE)  # TrackEntry
        video = track and _ebml_find(header, *track, 0xE0)
        if video is None:
            raise _NotOurs("its header has no video track")
        width = _ebml_uint(header, _ebml_find(header, *video, 0xB0))
        height = _ebml_uint(header, _ebml_find(header, *video, 0xBA))
        default_duration = _ebml_uint(header, _ebml_find(header, *track, 0x23E383))
        if not width or not height:
            raise _NotOurs("its video track has no frame size")
        metadata = _stored_metadata(_webm_tags(header, segment[2]))
        if metadata is None:
            raise _NotOurs(f"it holds no {METADATA_KEY!r} metadata tag")
        fps = 1e9 / default_duration if default_duration else None
        return _Layout((height, width), metadata, header, ends, fps=fps)


class _WebpWriter(_FileWriter):
    """Animated WebP assembled chunk by chunk: RIFF header, VP8X, ANIM, XMP, then ANMF frames;
    a write appends its ANMF chunks beyond the RIFF size, then commits them by rewriting it. The
    first frame of each write carries, after its bitstream, an unknown-to-readers chunk
    `_WEBP_WRITE_CHUNK` with the write's frame count (the WebP container allows unknown chunks
    at the end of a frame's data)."""

    format = "webp"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image

        height, width = frames.shape[1:3]
        piece = bytearray()
        if self.frames_written == 0:
            piece += _webp_header(width, height, self.metadata)
        durations = _frame_durations(self.frames_written, len(frames), self.rate, 1000)
        for i, (image, duration) in enumerate(zip(frames, durations)):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
            bitstream = b"".join(
                _riff_chunk(tag, body)
                for tag, body in _riff_chunks(buffer.getvalue()[12:])
                if tag in (b"VP8 ", b"VP8L", b"ALPH")
            )
            if i == 0:
                bitstream += _riff_chunk(_WEBP_WRITE_CHUNK, struct.pack("<I", len(frames)))
            header = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1) + _u24(duration)
            piece += _riff_chunk(b"ANMF", header + b"\x02" + bitstream)  # no blending
        self._append(bytes(piece), [(4, struct.pack("<I", self._end + len(piece) - 8))])

    def _uncommit(self, end: int) -> list[tuple[int, bytes]]:
        return [(4, struct.pack("<I", end - 8))]

    def _layout(self, data: Any) -> _Layout:
        if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
            raise _NotOurs("it is no RIFF WebP file")
        riff_end = min(len(data), 8 + struct.unpack_from("<I", data, 4)[0])
        header_end = None
        size = metadata = None
        writes: list[list[int]] = []  # [frames announced, frames found, end]
        durations = []
        for tag, body, chunk_size, end in _riff_chunk_spans(data, 12, riff_end):
            if tag == b"VP8X":
                width, height = (
                    1 + int.from_bytes(data[p : p + 3], "little") for p in (body + 4, body + 7)
                )
                size = (height, width)
            elif tag == b"XMP ":
                metadata = _metadata_from_xmp(bytes(data[body : body + chunk_size]))
            elif tag == b"ANMF":
                header_end = body - 8 if header_end is None else header_end
                durations.append(int.from_bytes(data[body + 12 : body + 15], "little"))
                for sub, sub_body, _, _ in _riff_chunk_spans(data, body + 16, body + chunk_size):
                    if sub == _WEBP_WRITE_CHUNK:
                        writes.append([struct.unpack_from("<I", data, sub_body)[0], 0, 0])
                if not writes:
                    raise _NotOurs("its first frame has no AdaState write marker")
                writes[-1][1:] = [writes[-1][1] + 1, end]
        if header_end is None or size is None or metadata is None:
            raise _NotOurs("it has no VP8X, XMP or ANMF chunks")
        header = bytes(data[:header_end])
        if header[12:] != _webp_header(size[1], size[0], metadata)[12:]:
            raise _NotOurs("its header differs from the one AdaState writes")
        ends, frames = [], 0
        for announced, found, end in writes:
            if found != announced:
                raise _NotOurs(f"a write of {announced} frames holds {found}")
            frames += found
            ends.append((frames, end))
        return _Layout(size, metadata, header, ends, durations=durations)

    def _check_resume(self, frames: int, layout: _Layout) -> None:
        self._check_durations(frames, layout.durations, 1000)


class _GifWriter(_FileWriter):
    """Animated GIF: header (+ a comment with the metadata JSON) then one image block per frame
    with its own 256-colour palette. The file always ends with the trailer byte ';'. A write
    appends an empty comment extension's body, its frames and a new trailer *after* the old
    trailer (readers stop there), then commits them by turning the old trailer into the
    extension introducer '!'. Those " " comments also mark where each write (after the first)
    starts, for resuming."""

    format = "gif"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image

        height, width = frames.shape[1:3]
        piece = bytearray()
        commits = []
        if self.frames_written == 0:
            piece += _gif_header(width, height, self.metadata)
        else:
            piece += _GIF_SEPARATOR[1:]  # label, body and terminator of a " " comment
            commits.append((self._end - 1, _GIF_SEPARATOR[:1]))
        durations = _frame_durations(self.frames_written, len(frames), self.rate, 100)
        for image, delay in zip(frames, durations):
            buffer = io.BytesIO()
            palette_image = Image.fromarray(image).quantize(256, Image.Quantize.FASTOCTREE)
            palette_image.save(buffer, "GIF")
            piece += b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"  # keep frame
            piece += _gif_image_block(buffer.getvalue())
        piece += b"\x3b"  # trailer
        self._append(bytes(piece), commits)

    def _uncommit(self, end: int) -> list[tuple[int, bytes]]:
        return [(end - 1, b"\x3b")]  # the trailer again, where the next write put its '!'

    def _layout(self, data: Any) -> _Layout:
        if len(data) < 13 or data[:6] != b"GIF89a":
            raise _NotOurs("it is no GIF89a file")
        width, height = struct.unpack_from("<HH", data, 6)
        comment = _gif_comment(data)
        metadata = json.loads(comment) if comment is not None else None
        if not isinstance(metadata, dict):
            raise _NotOurs("it has no metadata comment")
        header = _gif_header(width, height, metadata)
        if data[: len(header)] != header:
            raise _NotOurs("its header differs from the one AdaState writes")
        # a separator means the write after it was committed; the last write is committed if
        # the trailer follows it (a kill in the first write can leave neither)
        ends, frames, durations, pos = [], 0, [], len(header)
        try:
            while True:
                block = data[pos]
                if block == 0x3B:  # the trailer: the last committed write ends here
                    ends.append((frames, pos + 1))
                    break
                if data[pos : pos + len(_GIF_SEPARATOR)] == _GIF_SEPARATOR:
                    ends.append((frames, pos + 1))
                    pos += len(_GIF_SEPARATOR)
                elif block == 0x21 and data[pos + 1] == 0xF9:  # graphic control: frame delay
                    durations.append(struct.unpack_from("<H", data, pos + 4)[0])
                    pos = _gif_skip_sub_blocks(data, pos + 2)
                elif block == 0x21:
                    pos = _gif_skip_sub_blocks(data, pos + 2)
                elif block == 0x2C:  # an image: descriptor, local colour table, LZW data
                    packed = data[pos + 9]
                    pos += 10 + ((3 << ((packed & 0x07) + 1)) if packed & 0x80 else 0)
                    pos = _gif_skip_sub_blocks(data, pos + 1)
                    frames += 1
                else:
                    break
        except (IndexError, struct.error):  # cut off by a kill in the first write
            pass
        return _Layout((height, width), metadata, header, ends, durations=durations)

    def _check_resume(self, frames: int, layout: _Layout) -> None:
        self._check_durations(frames, layout.durations, 100)


class _PngWriter(VideoWriter):
    """PNG frames `<stem>_00001.png`, ... in `folder`; each written to a temporary name, fsync'ed
    and renamed, so every frame file on disk is complete. PNG frames carry no frame rate. The
    first frame of each write holds a private chunk `_PNG_WRITE_CHUNK` with the write's frame
    count, for resuming."""

    format = "png"

    def __init__(
        self, path: Path, *, resume_frames: int = 0, exclusive: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(path, **kwargs)  # exclusive: earlier frames are always refused
        self.folder, self.stem = _png_layout(path)
        if resume_frames:
            self._resume(resume_frames)
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _unwritable(self.folder, err) from None
        if not os.access(self.folder, os.W_OK):
            raise _unwritable(self.folder, PermissionError(13, "Permission denied"))
        stale = _png_frames(self.folder, self.stem)
        if stale:
            raise VideoIOError(
                f"{self.folder} already holds {len(stale)} frames named {self.stem}_*.png "
                f"(e.g. {stale[0].name}) from an earlier run; remove them, choose another name, "
                "or continue that run (resume)"
            )

    def _start_new(self) -> str:
        return (
            f"start a new video instead (another name, or delete {self.folder}/{self.stem}_*.png "
            "first)"
        )

    def frame_path(self, index: int) -> Path:
        """The file of frame `index` (0-based)."""
        return self.folder / f"{self.stem}_{index + 1:0{PNG_DIGITS}d}.png"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image, PngImagePlugin

        infos = [PngImagePlugin.PngInfo(), PngImagePlugin.PngInfo()]
        for info in infos:
            for key, value in _metadata_tags(self.metadata).items():
                info.add_itxt(key, value)
        first, info = infos
        first.add(_PNG_WRITE_CHUNK, struct.pack(">I", len(frames)))
        for i, image in enumerate(frames):
            path = self.frame_path(self.frames_written + i)
            tmp = path.with_name(path.name + ".partial")
            try:
                with open(tmp, "wb") as fh:
                    Image.fromarray(image).save(
                        fh, "PNG", pnginfo=first if i == 0 else info, compress_level=4
                    )
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except OSError as err:
                raise VideoIOError(f"could not write {path}: {err.strerror or err}") from None

    def _resume(self, frames: int) -> None:
        pattern = re.compile(re.escape(self.stem) + rf"_(\d{{{PNG_DIGITS},}})\.png(\.partial)?")
        found = []
        if self.folder.is_dir():
            found = [
                (int(m.group(1)), p)
                for p in self.folder.iterdir()
                if (m := pattern.fullmatch(p.name))
            ]
        numbers = {number for number, path in found if not path.name.endswith(".partial")}
        if not numbers:
            raise self._cannot_resume(
                frames,
                f"{self.folder} holds no frames named {self.stem}_*.png",
                "start a new video instead",
            )
        present = 0  # frames 1..present are all there
        while present + 1 in numbers:
            present += 1
        if frames > present:
            raise self._cannot_resume(
                frames,
                f"{self.folder} holds only {present} frames {self.stem}_*.png in a row (the run "
                "state is newer than the frames, or belongs to another video)",
            )
        try:
            first = _png_head(self.frame_path(0)) if 1 in numbers else None
            if first is None or first[2] is None:
                raise self._foreign(frames, f"{self.frame_path(0).name} has no AdaState marker")
            size, metadata = first[0], _stored_metadata(first[1])
            if metadata is None:
                raise self._foreign(frames, f"{self.frame_path(0).name} has no metadata")
            ends, position = [], 0
            while position < frames:  # walk the writes, from marker to marker
                frame_size, _, count = _png_head(self.frame_path(position))
                if count is None or frame_size != size:
                    name = self.frame_path(position).name
                    raise self._foreign(frames, f"{name} is not the first frame of a write")
                if position + count > present:  # a write cut off by a kill
                    break
                position += count
                ends.append(position)
        except (IndexError, ValueError, struct.error, zlib.error, OSError) as err:
            raise self._foreign(frames, f"unreadable frame: {err}") from None
        index = self._resume_point(frames, ends)
        if not os.access(self.folder, os.W_OK):
            raise _unwritable(self.folder, PermissionError(13, "Permission denied"))
        self.size, self.metadata = size, metadata
        # drop the frames after the resume point, the last one first (a kill leaves a prefix)
        extra = sorted(
            (
                (number, path)
                for number, path in found
                if number > frames or path.name.endswith(".partial")
            ),
            key=lambda item: (-item[0], not item[1].name.endswith(".partial")),
        )
        for _, path in extra:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as err:
                raise VideoIOError(f"could not remove {path}: {err.strerror or err}") from None
        self.frames_written, self.chunks_written = frames, index + 1


_WRITERS: dict[str, type[VideoWriter]] = {
    "mp4": _Mp4Writer,
    "webm": _WebmWriter,
    "webp": _WebpWriter,
    "gif": _GifWriter,
    "png": _PngWriter,
}


def _create_exclusive(path: Path) -> Any:
    """Open a new file for writing; FileExistsError if anything is at `path` already, a
    symbolic link included (it is never followed)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if os.path.lexists(path):  # O_EXCL already refuses; this also covers a dangling link
        raise FileExistsError(17, "File exists", str(path))
    fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "wb")


def _unwritable(path: Path, err: OSError) -> VideoIOError:
    return VideoIOError(
        f"cannot write video to {path}: it is not writable ({err.strerror or err}); "
        "choose another output path or fix the folder's permissions"
    )


def format_of(path: PathLike, format: str | None = None) -> str:
    """The format name for `path` ('mp4', 'webm', 'webp', 'gif' or 'png'): `format` if given,
    else from the suffix; a directory or a path with no suffix means PNG frames."""
    if format is not None:
        name = format.lower().lstrip(".")
        if name not in FORMATS:
            raise VideoIOError(f"unknown video format {format!r}; use one of {', '.join(FORMATS)}")
        return name
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if path.is_dir() or not suffix or str(path).endswith(("/", os.sep)):
        return "png"
    raise VideoIOError(
        f"cannot tell the video format of {path}: unknown suffix {path.suffix!r}; use one of "
        f"{', '.join(SUFFIXES)} (PNG frames), or a folder for PNG frames"
    )


def open_writer(
    path: PathLike,
    *,
    fps: float = 16,
    crf: int = 19,
    metadata: dict[str, str] | None = None,
    format: str | None = None,
    resume_frames: int = 0,
    exclusive: bool = False,
    preset: str | None = None,
) -> VideoWriter:
    """A progressive writer for `path`; see the module docstring for the formats.

    preset: the libx264 speed preset of MP4 files (default "medium"; "veryfast" encodes
    ≈ 2-4x faster for a somewhat larger file at the same crf); other formats ignore it.

    fps: frames per second (MP4, WebM, WebP, GIF). crf: quality for MP4 (0..51) and WebM
    (0..63), lower is better. metadata: strings to embed (prompt, seed, settings); read them
    back with `read_metadata`. format: 'mp4', 'webm', 'webp', 'gif' or 'png' (default: from the
    suffix). An existing file is replaced, unless `exclusive`: then the file is created only if
    nothing is at `path` (never through a symbolic link) and `OutputExistsError` says so
    otherwise, before anything is written. The parent folder is created if missing.

    resume_frames: N > 0 continues a video that this module wrote (with the same format and
    fps, and for MP4 the same crf) after its first N frames, e.g. those of a saved run state:
    N must be where one of its writes ended. Frames written after that (a chunk written after
    the state was saved, or the torn part of a write that was killed) are dropped, and the
    writer goes on as the one that wrote the N frames would have, so the result is the same as
    a run that never stopped (see the module docstring). The file's own metadata is kept: the
    `metadata` given is not used (the header that holds it is not rewritten, and PNG frames
    written after the resume repeat the stored one); read it with `writer.metadata`. If the
    file is missing, holds fewer than N frames, has no write ending at frame N, or was not
    written by this module with these settings, `VideoIOError` says so before anything in the
    file is changed. Frame size is checked by the first `write`.
    """
    kind = format_of(path, format)
    path = Path(path)
    checked = _check_metadata(metadata)
    given, resume_frames = resume_frames, -1
    if not isinstance(given, bool):
        with contextlib.suppress(TypeError):
            resume_frames = operator.index(given)
    if resume_frames < 0:
        raise VideoIOError(
            f"resume_frames must be a whole number of frames >= 0 (0: a new video), got {given!r}"
        )
    if exclusive and not resume_frames and kind != "png" and os.path.lexists(path):
        raise OutputExistsError(f"{path} already exists; nothing was written (choose another name)")
    if kind != "png":
        if not resume_frames:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise _unwritable(path.parent, err) from None
        if path.is_dir():
            raise VideoIOError(
                f"cannot write video to {path}: it is a folder; give a file name such as "
                f"{path / ('video.' + kind)}"
            )
    if preset is not None and preset not in X264_PRESETS:
        raise VideoIOError(f"preset must be one of {', '.join(X264_PRESETS)}, got {preset!r}")
    extra = {"preset": preset} if kind == "mp4" and preset is not None else {}
    return _WRITERS[kind](
        path, fps=fps, crf=crf, metadata=checked, resume_frames=resume_frames,
        exclusive=bool(exclusive), **extra,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------
# reading back (tests, CLI)


def count_frames(path: PathLike) -> int:
    """The number of frames that decode from `path` (a video file or PNG frames)."""
    kind = format_of(path)
    if kind == "png":
        return len(_png_frames(*_png_layout(Path(path))))
    if kind == "webp":
        return len(read_frames(path))
    av = _import_av()
    with _open_for_reading(av, path) as container:
        return sum(1 for _ in container.decode(video=0))


def read_frames(path: PathLike) -> np.ndarray:
    """All frames of `path` decoded to uint8 `[T, H, W, 3]` (PyAV for MP4/WebM/GIF, Pillow for
    WebP and PNG frames)."""
    kind = format_of(path)
    if kind in ("png", "webp"):
        from PIL import Image, ImageSequence

        files = _png_frames(*_png_layout(Path(path))) if kind == "png" else [Path(path)]
        images = []
        for file in files:
            with Image.open(file) as image:
                images += [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)]
    else:
        av = _import_av()
        sws = _sws_flags(av, _SWS_DECODE)
        with _open_for_reading(av, path) as container:
            images = [
                f.reformat(format="rgb24", interpolation=sws).to_ndarray()
                for f in container.decode(video=0)
            ]
    if not images:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(images)


def read_metadata(path: PathLike) -> dict[str, str]:
    """The metadata dict written by `open_writer(..., metadata=...)`; for files from elsewhere,
    the container's own tags (MP4/WebM) or an empty dict."""
    kind = format_of(path)
    path = Path(path)
    if kind in ("mp4", "webm"):
        with _open_for_reading(_import_av(), path) as container:
            return _metadata_from_tags(dict(container.metadata))
    if kind == "png":
        from PIL import Image

        files = _png_frames(*_png_layout(path))
        if not files:
            raise VideoIOError(f"no PNG frames found for {path}")
        with Image.open(files[0]) as image:
            return _metadata_from_tags(dict(getattr(image, "text", {})))
    data = _read_bytes(path)
    if kind == "gif":
        comment = _gif_comment(data)
        return json.loads(comment) if comment else {}
    for tag, body in _riff_chunks(data[12:]):
        if tag == b"XMP ":
            return _metadata_from_xmp(body)
    return {}


def _open_for_reading(av: Any, path: PathLike) -> Any:
    try:
        return av.open(str(path))
    except FileNotFoundError:
        raise VideoIOError(f"video file {path} does not exist") from None
    except av.error.FFmpegError as err:
        raise VideoIOError(f"cannot read {path} as a video: {err}") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VideoIOError(f"video file {path} does not exist") from None


# ----------------------------------------------------------------------------------------------
# PNG frame layout


def _png_layout(path: Path) -> tuple[Path, str]:
    """(folder, stem) of the frame files `<folder>/<stem>_00001.png` for `path`."""
    if path.suffix.lower() == ".png":
        return path.parent, path.stem
    return path, "frame"


def _png_head(path: Path) -> tuple[tuple[int, int], dict[str, str], int | None]:
    """((H, W), text chunks, write marker count or None) of a PNG file, read up to its image
    data."""
    tags, count = {}, None
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            raise ValueError(f"{path.name} is not a PNG file")
        size = None
        while True:
            length, kind = struct.unpack(">I4s", fh.read(8))
            if kind in (b"IDAT", b"IEND"):
                break
            body = fh.read(length)
            fh.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"IHDR":
                width, height = struct.unpack_from(">II", body)
                size = (height, width)
            elif kind == _PNG_WRITE_CHUNK:
                count = struct.unpack(">I", body)[0]
            elif kind == b"tEXt":
                key, _, text = body.partition(b"\0")
                tags[key.decode("latin-1")] = text.decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                text = rest.split(b"\0", 2)[2]
                tags[key.decode("latin-1")] = (
                    zlib.decompress(text) if compressed else text
                ).decode()
    if size is None:
        raise ValueError(f"{path.name} has no IHDR chunk")
    return size, tags, count


def _png_frames(folder: Path, stem: str) -> list[Path]:
    """The frame files of (folder, stem), in frame order."""
    pattern = re.compile(re.escape(stem) + rf"_(\d{{{PNG_DIGITS},}})\.png")
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


# ----------------------------------------------------------------------------------------------
# MP4 boxes


def _mp4_box_spans(
    data: Any, start: int = 0, end: int | None = None
) -> Iterator[tuple[str, int, int]]:
    """(type, offset, size) of the complete boxes in data[start:end], up to the first one that
    is cut off."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        elif size == 0:
            size = end - pos
        if size < 8 or pos + size > end:
            return
        yield kind.decode("latin-1"), pos, size
        pos += size


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, bytes]]:
    """(type, whole box) of the boxes in data[start:end]."""
    for kind, pos, size in _mp4_box_spans(data, start, end):
        yield kind, data[pos : pos + size]


def _mp4_find(box: bytes, *path: str) -> bytes | None:
    """The first box at `path` (types) inside the container box `box`."""
    for kind, child in _mp4_boxes(box, 8):
        if kind == path[0]:
            return child if len(path) == 1 else _mp4_find(child, *path[1:])
    return None


def _mp4_sample_count(moof: bytes) -> int:
    """The number of samples (frames) in the fragment `moof`."""
    return sum(
        struct.unpack_from(">I", box, 12)[0]
        for kind, _, box in _mp4_traf_boxes(moof)
        if kind == "trun"
    )


def _mp4_header_tags(av: Any, header: bytes) -> dict[str, str]:
    """The container tags of an MP4 header (ftyp + moov, no fragments yet)."""
    try:
        with av.open(io.BytesIO(header), format="mp4") as container:
            return dict(container.metadata)
    except av.error.FFmpegError:
        return {}


def _mp4_traf_boxes(moof: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(type, offset in moof, box) of the boxes inside each traf of `moof`."""
    offset = 8
    for kind, box in _mp4_boxes(moof, 8):
        if kind == "traf":
            inner = 8
            for sub_kind, sub in _mp4_boxes(box, 8):
                yield sub_kind, offset + inner, sub
                inner += len(sub)
        offset += len(box)


def _mp4_shift_decode_time(moof: bytes, shift: int) -> bytes:
    """`moof` with `shift` added to its tfdt (base media decode time)."""
    out = bytearray(moof)
    for kind, offset, box in _mp4_traf_boxes(moof):
        if kind == "tfdt":
            layout = ">Q" if box[8] == 1 else ">I"
            time = struct.unpack_from(layout, box, 12)[0] + shift
            if layout == ">I" and time >= 1 << 32:
                raise VideoIOError("internal: MP4 decode time overflows a version-0 tfdt")
            struct.pack_into(layout, out, offset + 12, time)
    return bytes(out)


def _mp4_fragment_duration(moof: bytes) -> int:
    """The summed sample durations of the (one-track) fragment `moof`."""
    default = None
    total = 0
    for kind, _, box in _mp4_traf_boxes(moof):
        flags = int.from_bytes(box[9:12], "big")
        if kind == "tfhd" and flags & 0x08:
            pos = 16 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
            default = struct.unpack_from(">I", box, pos)[0]
        elif kind == "trun":
            count = struct.unpack_from(">I", box, 12)[0]
            pos = 16 + (4 if flags & 0x01 else 0) + (4 if flags & 0x04 else 0)
            fields = [0x100, 0x200, 0x400, 0x800]
            stride = 4 * sum(1 for f in fields if flags & f)
            if flags & 0x100:
                total += sum(
                    struct.unpack_from(">I", box, pos + i * stride)[0] for i in range(count)
                )
            elif default is not None:
                total += default * count
            else:
                raise VideoIOError("internal: MP4 fragment without sample durations")
    return total


# ----------------------------------------------------------------------------------------------
# WebM (EBML)

_EBML_HEAD = 0x1A45DFA3
_EBML_SEGMENT = 0x18538067
_EBML_CLUSTER = 0x1F43B675
_EBML_VOID = 0xEC
_EBML_BLOCKS = (0xA3, 0xA0)  # SimpleBlock, BlockGroup: one frame each


def _ebml_vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    """(value, length) of the EBML variable-size integer at `pos`; value -1 means unknown."""
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    value = int.from_bytes(data[pos : pos + length], "big")
    if not keep_marker:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            value = -1
    return value, length


def _ebml_elements(data: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(id, offset, body offset, end offset) of the elements in data[start:end]; the end offset
    of the last one may lie beyond `end` if it is cut off (an unknown size ends at `end`)."""
    pos = start
    while pos < end:
        if data[pos] == 0 or pos + 1 >= end:
            return
        element, id_len = _ebml_vint(data, pos, keep_marker=True)
        if pos + id_len >= end or data[pos + id_len] == 0:
            return
        size, size_len = _ebml_vint(data, pos + id_len, keep_marker=False)
        body = pos + id_len + size_len
        if body > end:
            return
        element_end = end if size == -1 else body + size
        yield element, pos, body, element_end
        pos = element_end


def _ebml_find(data: Any, start: int, end: int, *path: int) -> tuple[int, int] | None:
    """(body offset, end offset) of the first element at `path` (ids) in data[start:end]."""
    for element, _, body, element_end in _ebml_elements(data, start, end):
        if element == path[0]:
            if len(path) == 1:
                return body, element_end
            return _ebml_find(data, body, element_end, *path[1:])
    return None


def _ebml_uint(data: Any, span: tuple[int, int] | None) -> int:
    return int.from_bytes(data[span[0] : span[1]], "big") if span else 0


def _webm_tags(data: Any, start: int) -> dict[str, str]:
    """The SimpleTags (name: string) of the segment's Tags element, given the segment body."""
    tags = {}
    found = _ebml_find(data, start, len(data), 0x1254C367)  # Tags
    for tag, _, body, end in _ebml_elements(data, *found) if found else ():
        for simple, _, simple_body, simple_end in _ebml_elements(data, body, end):
            if tag != 0x7373 or simple != 0x67C8:  # Tag, SimpleTag
                continue
            name = _ebml_find(data, simple_body, simple_end, 0x45A3)
            value = _ebml_find(data, simple_body, simple_end, 0x4487)
            if name and value:
                key = bytes(data[name[0] : name[1]]).decode("utf-8", "replace")
                tags[key] = bytes(data[value[0] : value[1]]).decode("utf-8", "replace")
    return tags


def _webm_split(data: bytes, path: Path) -> tuple[bytes, bytes]:
    """(header: EBML head + segment start + everything before the first cluster, clusters)
    of a live-style WebM (a segment of unknown size)."""
    pos = 0
    while pos < len(data):
        element, id_len = _ebml_vint(data, pos, keep_marker=True)
        size, size_len = _ebml_vint(data, pos + id_len, keep_marker=False)
        body = pos + id_len + size_len
        if element == _EBML_SEGMENT:
            if size != -1:
                raise VideoIOError(f"internal: WebM segment for {path} has a fixed size")
            pos = body
            break
        pos = body + size
    header_end = None
    clusters = bytearray()
    while pos < len(data):
        element, id_len = _ebml_vint(data, pos, keep_marker=True)
        size, size_len = _ebml_vint(data, pos + id_len, keep_marker=False)
        end = pos + id_len + size_len + size
        if element == _EBML_CLUSTER:
            header_end = pos if header_end is None else header_end
            clusters += data[pos:end]
        pos = end
    if header_end is None:
        raise VideoIOError(f"internal: the WebM encoder wrote no cluster for {path}")
    return data[:header_end], bytes(clusters)


# ----------------------------------------------------------------------------------------------
# RIFF (WebP) and GIF


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "little")


def _riff_chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def _riff_chunk_spans(data: Any, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(fourcc, body offset, body size, end offset with padding) of the complete RIFF chunks in
    data[start:end]."""
    pos = start
    while pos + 8 <= end:
        tag, size = bytes(data[pos : pos + 4]), struct.unpack_from("<I", data, pos + 4)[0]
        chunk_end = pos + 8 + size + (size & 1)
        if chunk_end > end:
            return
        yield tag, pos + 8, size, chunk_end
        pos = chunk_end


def _webp_header(width: int, height: int, metadata: dict[str, str]) -> bytes:
    """RIFF header (size 0, set by each write's commit), VP8X, ANIM and XMP chunks."""
    vp8x = struct.pack("<B3x", 0x02 | 0x04) + _u24(width - 1) + _u24(height - 1)
    return (
        b"RIFF\0\0\0\0WEBP"
        + _riff_chunk(b"VP8X", vp8x)
        + _riff_chunk(b"ANIM", struct.pack("<IH", 0xFFFFFFFF, 0))  # white, loop
        + _riff_chunk(b"XMP ", _xmp_packet(metadata))
    )


def _riff_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(fourcc, body) of the RIFF chunks in `data` (a RIFF body without its 12-byte header)."""
    pos = 0
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        yield tag, data[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)


def _xmp_packet(metadata: dict[str, str]) -> bytes:
    text = escape(json.dumps(metadata, ensure_ascii=False, sort_keys=True))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:adastate="{_XMP_NS}">'
        f"<adastate:metadata>{text}</adastate:metadata>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="r"?>'
    ).encode()


def _metadata_from_xmp(xmp: bytes) -> dict[str, str]:
    node = ElementTree.fromstring(xmp).find(f".//{{{_XMP_NS}}}metadata")
    return json.loads(node.text or "{}") if node is not None else {}


def _gif_header(width: int, height: int, metadata: dict[str, str]) -> bytes:
    """Header, screen descriptor (no global colour table), loop forever, metadata comment."""
    comment = json.dumps(metadata, ensure_ascii=True, sort_keys=True).encode()
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0, 0, 0)
        + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
        + b"\x21\xfe"
        + _gif_sub_blocks(comment)
    )


def _gif_sub_blocks(data: bytes) -> bytes:
    """`data` as GIF data sub-blocks (length byte + up to 255 bytes) and a terminator."""
    out = bytearray()
    for i in range(0, len(data), 255):
        out += bytes([len(data[i : i + 255])]) + data[i : i + 255]
    return bytes(out + b"\0")


def _gif_skip_sub_blocks(data: bytes, pos: int) -> int:
    while data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _gif_image_block(gif: bytes) -> bytes:
    """The first image of the one-frame GIF `gif` as an image block with a local colour table
    (its global colour table moved into the image descriptor)."""
    packed = gif[10]
    pos = 13
    table, table_bits = b"", 0
    if packed & 0x80:
        table_len = 3 << ((packed & 0x07) + 1)
        table, table_bits = gif[pos : pos + table_len], packed & 0x07
        pos += table_len
    while gif[pos] == 0x21:  # extensions: skip
        pos = _gif_skip_sub_blocks(gif, pos + 2)
    if gif[pos] != 0x2C:
        raise VideoIOError("internal: unexpected GIF block from Pillow")
    descriptor = bytearray(gif[pos : pos + 10])
    pos += 10
    if descriptor[9] & 0x80:  # already has a local table
        local_len = 3 << ((descriptor[9] & 0x07) + 1)
        table, pos = gif[pos : pos + local_len], pos + local_len
    else:
        descriptor[9] = (descriptor[9] & 0x40) | 0x80 | table_bits
    end = _gif_skip_sub_blocks(gif, pos + 1)  # after the LZW minimum code size byte
    return bytes(descriptor) + table + gif[pos:end]


def _gif_comment(data: bytes) -> str | None:
    """The first comment extension of a GIF, if any."""
    packed = data[10]
    pos = 13 + ((3 << ((packed & 0x07) + 1)) if packed & 0x80 else 0)
    while pos < len(data) and data[pos] == 0x21:
        if data[pos + 1] == 0xFE:
            text, p = bytearray(), pos + 2
            while data[p]:
                text += data[p + 1 : p + 1 + data[p]]
                p += data[p] + 1
            return text.decode("ascii")
        pos = _gif_skip_sub_blocks(data, pos + 2)
    return None
