"""Video writers that put every chunk on disk as it is written.

A stream makes video chunk by chunk; a run that is interrupted, crashes or is killed (even with
SIGKILL) must leave a playable file holding every frame written so far. Each `write()`
therefore encodes its frames completely in memory and then *appends* a self-contained piece
to the file, flushed and fsync'ed before `write()` returns:

=========  ===============================================================================
suffix     what each write appends
=========  ===============================================================================
``.mp4``   H.264 (libx264, yuv420p, ``crf``) in fragmented MP4: one ``moof``+``mdat``
           fragment that starts with a keyframe; the first write also writes ``ftyp``+``moov``.
``.webm``  VP9 (libvpx-vp9, ``crf``) in a live-style WebM (segment of unknown size): one
           Matroska ``Cluster`` that starts with a keyframe.
``.webp``  animated WebP: one ``ANMF`` chunk per frame (lossy, quality ``WEBP_QUALITY``),
           then the RIFF size in the header is updated.
``.gif``   animated GIF: one image block per frame (256-colour palette per frame), written
           over the previous trailer byte and followed by a new trailer.
``.png``   PNG frames: ``clip.png`` means the files ``clip_00001.png``, ``clip_00002.png``, ...
           beside it; a directory (an existing one, or a path with no suffix) means
           ``<dir>/frame_00001.png``, ...; each frame is written to a temporary name and renamed.
=========  ===============================================================================

Why not let one FFmpeg muxer run for the whole video: the MP4 and Matroska muxers keep the
current fragment/cluster in memory until the *next* one starts, and PyAV exposes no muxer flush
(``av_write_frame(ctx, NULL)``). So each write runs a fresh encoder and muxer over its chunk and
the writer splices the result: it drops the repeated header and, for MP4, sets the fragment's
decode time (``tfdt``) to the frames written before. Every chunk starts with a keyframe.

Metadata (prompt, seed, settings: a dict of strings) is stored as one JSON string under the key
``adastate`` (``read_metadata`` reads it back exactly) and, where the format has named tags,
also as one tag per key so that ``ffprobe``/``exiftool`` show them: MP4 ``udta`` tags, WebM
``Tags``, PNG ``iTXt`` chunks; GIF keeps the JSON in a comment extension and WebP in an XMP chunk.

Frames are ComfyUI ``IMAGE`` layout: ``[T, H, W, 3]`` float in 0..1 (rounded to 0..255) or uint8.
PyAV (``pip install av``) encodes MP4/WebM and decodes MP4/WebM/GIF; Pillow writes PNG, GIF and
WebP frames and decodes PNG and WebP (FFmpeg cannot decode animated WebP).
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
from collections.abc import Iterator
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


class VideoIOError(AdaStateError):
    """A video file that cannot be written or read as asked."""


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
    """The tags to store: one per key plus the whole dict as JSON under `METADATA_KEY`."""
    return {**metadata, METADATA_KEY: json.dumps(metadata, ensure_ascii=False, sort_keys=True)}


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
    is harmless and writing after close raises `VideoIOError`.
    """

    format: str = ""

    def __init__(self, path: Path, *, fps: float, crf: int, metadata: dict[str, str]) -> None:
        self.path = path
        self.rate = _as_rate(fps)
        self.crf = crf
        self.metadata = metadata
        self.size: tuple[int, int] | None = None  # (H, W), fixed by the first write
        self.frames_written = 0
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


class _FileWriter(VideoWriter):
    """A writer of one file that only ever grows. Each write appends its bytes in a form that
    readers do not yet see, fsyncs them, then *commits* them by patching a few bytes in place
    (a box type, a size, a trailer byte), so even a kill in the middle of a write leaves the
    file as the previous write left it, plus unseen bytes."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - held open until close()
        except OSError as err:
            raise _unwritable(path, err) from None
        self._end = 0  # file size after the last complete write

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
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


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
        super().__init__(path, crf=crf, **kwargs)
        self.chunks_written = 0
        self._moov = b""  # MP4: the moov box of the first write
        self._decode_time = 0  # MP4: the duration of all fragments so far, in track timescale

    def _encode(self, frames: np.ndarray, options: dict[str, str]) -> bytes:
        """One complete file of `frames` ([T, H, W, 3] uint8), timestamps continuing from
        `frames_written`."""
        av = self._av
        sink = _Sink()
        sws = _sws_flags(av, _SWS_ENCODE)
        with av.open(sink, "w", format=self.container_format, options=options) as container:
            container.metadata.update(_metadata_tags(self.metadata))
            stream = container.add_stream(self.codec, rate=self.rate, options=self._codec_options())
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / self.rate
            self._configure(stream.codec_context)
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame = frame.reformat(format="yuv420p", dst_colorspace="ITU709", interpolation=sws)
                frame.pts = self.frames_written + i
                frame.time_base = stream.time_base
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


class _Mp4Writer(_PyAVWriter):
    format = "mp4"
    codec = "libx264"
    container_format = "mp4"
    max_crf = 51

    def _check_size(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise VideoIOError(
                f"cannot write {height}x{width} (H x W) frames to {self.path}: H.264 yuv420p "
                "needs an even height and width; crop or resize the frames, or write .webm, "
                ".webp, .gif or .png instead"
            )

    def _codec_options(self) -> dict[str, str]:
        # no B-frames: presentation time = decode time, so the video starts at t = 0
        return {"crf": str(self.crf), "preset": "medium", "bf": "0"}

    def _write(self, frames: np.ndarray) -> None:
        data = self._encode(
            frames,
            {
                "movflags": "frag_keyframe+empty_moov+default_base_moof+use_metadata_tags",
                "fragment_index": str(self.chunks_written + 1),
            },
        )
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
                raise VideoIOError("internal: the H.264 setup changed between chunks")
            elif kind == "moof":  # written as a 'free' box; renamed 'moof' once all is on disk
                commits.append((self._end + len(piece) + 4, b"moof"))
                piece += _mp4_shift_decode_time(box, self._decode_time)
                piece[-len(box) + 4 : -len(box) + 8] = b"free"
            elif kind == "mdat":
                piece += box
        self._append(bytes(piece), commits)
        self._decode_time += sum(_mp4_fragment_duration(box) for k, box in boxes if k == "moof")
        self.chunks_written += 1


class _WebmWriter(_PyAVWriter):
    format = "webm"
    codec = "libvpx-vp9"
    container_format = "webm"
    max_crf = 63

    def _codec_options(self) -> dict[str, str]:
        return {"crf": str(self.crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}

    def _write(self, frames: np.ndarray) -> None:
        data = self._encode(frames, {})
        header, clusters = _webm_split(data, self.path)
        self._append(header + clusters if self.chunks_written == 0 else clusters)
        self.chunks_written += 1


class _WebpWriter(_FileWriter):
    """Animated WebP assembled chunk by chunk: RIFF header, VP8X, ANIM, XMP, then ANMF frames;
    a write appends its ANMF chunks beyond the RIFF size, then commits them by rewriting it."""

    format = "webp"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image

        height, width = frames.shape[1:3]
        piece = bytearray()
        if self.frames_written == 0:
            xmp = _xmp_packet(self.metadata)
            vp8x = struct.pack("<B3x", 0x02 | 0x04) + _u24(width - 1) + _u24(height - 1)
            piece += b"RIFF\0\0\0\0WEBP" + _riff_chunk(b"VP8X", vp8x)
            piece += _riff_chunk(b"ANIM", struct.pack("<IH", 0xFFFFFFFF, 0))  # white, loop
            piece += _riff_chunk(b"XMP ", xmp)
        durations = _frame_durations(self.frames_written, len(frames), self.rate, 1000)
        for image, duration in zip(frames, durations):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
            bitstream = b"".join(
                _riff_chunk(tag, body)
                for tag, body in _riff_chunks(buffer.getvalue()[12:])
                if tag in (b"VP8 ", b"VP8L", b"ALPH")
            )
            header = _u24(0) + _u24(0) + _u24(width - 1) + _u24(height - 1) + _u24(duration)
            piece += _riff_chunk(b"ANMF", header + b"\x02" + bitstream)  # no blending
        self._append(bytes(piece), [(4, struct.pack("<I", self._end + len(piece) - 8))])


class _GifWriter(_FileWriter):
    """Animated GIF: header (+ a comment with the metadata JSON) then one image block per frame
    with its own 256-colour palette. The file always ends with the trailer byte ';'. A write
    appends an empty comment extension's body, its frames and a new trailer *after* the old
    trailer (readers stop there), then commits them by turning the old trailer into the
    extension introducer '!'."""

    format = "gif"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image

        height, width = frames.shape[1:3]
        piece = bytearray()
        commits = []
        if self.frames_written == 0:
            piece += b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
            piece += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
            comment = json.dumps(self.metadata, ensure_ascii=True, sort_keys=True).encode()
            piece += b"\x21\xfe" + _gif_sub_blocks(comment)
        else:
            piece += b"\xfe\x01 \x00"  # label, body and terminator of a " " comment
            commits.append((self._end - 1, b"\x21"))
        durations = _frame_durations(self.frames_written, len(frames), self.rate, 100)
        for image, delay in zip(frames, durations):
            buffer = io.BytesIO()
            palette_image = Image.fromarray(image).quantize(256, Image.Quantize.FASTOCTREE)
            palette_image.save(buffer, "GIF")
            piece += b"\x21\xf9\x04\x04" + struct.pack("<H", delay) + b"\x00\x00"  # keep frame
            piece += _gif_image_block(buffer.getvalue())
        piece += b"\x3b"  # trailer
        self._append(bytes(piece), commits)


class _PngWriter(VideoWriter):
    """PNG frames `<stem>_00001.png`, ... in `folder`; each written to a temporary name, fsync'ed
    and renamed, so every frame file on disk is complete. PNG frames carry no frame rate."""

    format = "png"

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.folder, self.stem = _png_layout(path)
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
                f"(e.g. {stale[0].name}) from an earlier run; remove them or choose another path"
            )

    def frame_path(self, index: int) -> Path:
        """The file of frame `index` (0-based)."""
        return self.folder / f"{self.stem}_{index + 1:0{PNG_DIGITS}d}.png"

    def _write(self, frames: np.ndarray) -> None:
        from PIL import Image, PngImagePlugin

        info = PngImagePlugin.PngInfo()
        for key, value in _metadata_tags(self.metadata).items():
            info.add_itxt(key, value)
        for i, image in enumerate(frames):
            path = self.frame_path(self.frames_written + i)
            tmp = path.with_name(path.name + ".partial")
            try:
                with open(tmp, "wb") as fh:
                    Image.fromarray(image).save(fh, "PNG", pnginfo=info, compress_level=4)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except OSError as err:
                raise VideoIOError(f"could not write {path}: {err.strerror or err}") from None


_WRITERS: dict[str, type[VideoWriter]] = {
    "mp4": _Mp4Writer,
    "webm": _WebmWriter,
    "webp": _WebpWriter,
    "gif": _GifWriter,
    "png": _PngWriter,
}


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
) -> VideoWriter:
    """A progressive writer for `path`; see the module docstring for the formats.

    fps: frames per second (MP4, WebM, WebP, GIF). crf: quality for MP4 (0..51) and WebM
    (0..63), lower is better. metadata: strings to embed (prompt, seed, settings); read them
    back with `read_metadata`. format: 'mp4', 'webm', 'webp', 'gif' or 'png' (default: from the
    suffix). An existing file is replaced; the parent folder is created if missing.
    """
    kind = format_of(path, format)
    path = Path(path)
    checked = _check_metadata(metadata)
    if kind != "png":
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _unwritable(path.parent, err) from None
        if path.is_dir():
            raise VideoIOError(
                f"cannot write video to {path}: it is a folder; give a file name such as "
                f"{path / ('video.' + kind)}"
            )
    return _WRITERS[kind](path, fps=fps, crf=crf, metadata=checked)


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


def _png_frames(folder: Path, stem: str) -> list[Path]:
    """The frame files of (folder, stem), in frame order."""
    pattern = re.compile(re.escape(stem) + rf"_(\d{{{PNG_DIGITS},}})\.png")
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


# ----------------------------------------------------------------------------------------------
# MP4 boxes


def _mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, bytes]]:
    """(type, whole box) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        elif size == 0:
            size = end - pos
        yield kind.decode("latin-1"), data[pos : pos + size]
        pos += size


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

_EBML_SEGMENT = 0x18538067
_EBML_CLUSTER = 0x1F43B675


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
