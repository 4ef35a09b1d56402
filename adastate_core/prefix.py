"""Start a stream from the user's image or video (image-to-video, extending a clip): read and
fit the frames, encode them with the Wan VAE encoder, prime the stream with the latents and
build the decoder's cache from them, so the generated frames join the last given frame
without a seam. The CLI (`--init-image`, `--init-video`, `adastate extend`) and the Prime
Stream node share this.

Fitting (documented rule): each frame is converted to RGB (grey is replicated; an alpha
channel is dropped, as ComfyUI's Load Image does for the image), scaled with Lanczos so it
covers height x width with its aspect ratio kept, then centre-cropped. Frame count: the Wan
VAE encodes 1 + 4k frames (the first alone, then groups of 4), so of a video's F frames (or its
last `max_frames`) the last 1 + 4 floor((F - 1) / 4) are used; an image is one frame.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import AdaStateError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
OUTPUTS = ("original", "decoded")


class PrefixError(AdaStateError, ValueError):
    """An init image / video that cannot be used (the message says why and what to do)."""


def usable_frames(count: int, max_frames: int | None = None) -> int:
    """How many of the last `count` frames the VAE can encode: 1 + 4k, at most `max_frames`."""
    if max_frames is not None:
        count = min(count, max_frames)
    return 0 if count < 1 else 1 + 4 * ((count - 1) // 4)


def fit_frame(image, height: int, width: int) -> np.ndarray:
    """A PIL image -> uint8 [height, width, 3]: RGB, scaled to cover, centre-cropped."""
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    scale = max(width / w, height / h)
    size = (max(width, math.ceil(w * scale - 1e-9)), max(height, math.ceil(h * scale - 1e-9)))
    if size != (w, h):
        rgb = rgb.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(rgb.crop((left, top, left + width, top + height)), dtype=np.uint8)


def read_prefix(
    path: str | Path, height: int, width: int, max_frames: int | None = None
) -> np.ndarray:
    """The frames of an image or video file fitted to height x width: uint8 [T, H, W, 3] with
    T = 1 + 4k (the last usable frames of a video). PrefixError for anything unusable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path).expanduser()
    if not path.is_file():
        raise PrefixError(f"init file not found: {path}")
    if max_frames is not None and max_frames < 1:
        raise PrefixError(f"--init-frames must be at least 1, got {max_frames}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        try:
            with Image.open(path) as im:
                im.load()
                return fit_frame(im, height, width)[None]
        except (UnidentifiedImageError, OSError) as err:
            raise PrefixError(f"{path} is not a readable image ({err})") from None
    from .io import read_frames

    try:
        frames = read_frames(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure: one clear message
        raise PrefixError(
            f"{path} is not a readable video ({type(err).__name__}: {err}); give an mp4 / webm "
            "/ gif / webp file or an image"
        ) from None
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise PrefixError(f"{path} has no frames")
    n = usable_frames(frames.shape[0], max_frames)
    return np.stack([fit_frame(Image.fromarray(f), height, width) for f in frames[-n:]])


def check_frames(frames: np.ndarray | Tensor, height: int, width: int) -> Tensor:
    """IMAGE-style frames [T, H, W, 3|4|1] (float 0..1 or uint8) at the stream size -> uint8
    [T', H, W, 3] with T' = 1 + 4k (the last ones)."""
    t = _tensor(frames)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] == 0 or t.shape[-1] not in (1, 3, 4):
        raise PrefixError(
            f"init frames must be [frames, height, width, channels] with 1, 3 or 4 channels, "
            f"got {list(t.shape)}"
        )
    if tuple(t.shape[1:3]) != (height, width):
        raise PrefixError(
            f"init frames are {t.shape[2]}x{t.shape[1]}, the stream is {width}x{height}: "
            "resize them first (e.g. ComfyUI's Upscale Image to the stream size, crop center)"
        )
    if t.shape[-1] == 1:
        t = t.expand(*t.shape[:-1], 3)
    t = t[..., :3]
    if t.dtype != torch.uint8:
        t = (t.float().nan_to_num(0.0).clamp(0, 1) * 255).round().to(torch.uint8)
    n = usable_frames(t.shape[0])
    return t[-n:].contiguous()


def _tensor(frames) -> Tensor:
    if isinstance(frames, Tensor):
        return frames
    array = np.asarray(frames)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def encode_frames(
    encoder, frames: Tensor | np.ndarray, on_latent: Callable[[int, int], None] | None = None
) -> Tensor:
    """uint8 frames [T, H, W, 3] (T = 1 + 4k) -> normalised latents [1, 16, 1 + k, H/8, W/8],
    moved to the encoder's device 4 frames at a time (bounded memory for long clips)."""
    frames = _tensor(frames)
    total = frames.shape[0]
    latents, cache, start, done = [], None, 0, 0
    n_latents = 1 + (total - 1) // 4
    while start < total:
        stop = 1 if cache is None else min(total, start + 16)
        video = frames[start:stop].permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
        lat, cache = encoder.encode_chunk(video, cache)
        latents.append(lat)
        done += lat.shape[2]
        if on_latent is not None:
            on_latent(done, n_latents)
        start = stop
    return torch.cat(latents, dim=2)


@dataclass
class Started:
    """A primed stream and where its video stands: the decoder cache after the prefix, the
    frames already in the file, and the first chunk's frames not to write again."""

    stream: object  # StreamState
    vae_cache: object | None  # DecoderCache
    frames_written: int
    skip_frames: int


def start_from(
    model,
    vae,
    stream,
    latents: Tensor,
    frames: Tensor | np.ndarray,
    write: Callable[[Tensor], None] | None,
    output: str = "original",
) -> Started:
    """Prime `stream` with `latents` (the encoding of `frames`) and make the video continue
    from them: the decoder's cache is built by decoding the whole prefix chunks; the file (via
    `write`, uint8 [T, H, W, 3]) starts with the original frames (`output="original"`) or
    their re-encoded decode (`"decoded"`); the lead latents of a partial chunk are decoded with
    the first generated chunk, which then skips the frames they give when the original frames
    were written."""
    from .io.background import frames_uint8
    from .stream import prime
    from .vae import video_frames

    if output not in OUTPUTS:
        raise PrefixError(f"prefix output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    stream = prime(model, stream, latents)
    c = stream.config.chunk
    n = latents.shape[2]
    whole = (n // c) * c
    vae_cache = None
    written = 0
    decoded = None
    if whole:
        decoded, vae_cache = vae.decode_chunk(latents[:, :, :whole])
    frames = _tensor(frames)
    if output == "original":
        if write is not None:
            write(frames)
        written = frames.shape[0]
        skip = video_frames(n - whole, first=whole == 0)
    else:
        if decoded is not None:
            host = frames_uint8(decoded).cpu()
            if write is not None:
                write(host)
            written = host.shape[0]
        skip = 0
    return Started(stream, vae_cache, written, skip)


__all__ = [
    "OUTPUTS",
    "PrefixError",
    "Started",
    "check_frames",
    "encode_frames",
    "fit_frame",
    "read_prefix",
    "start_from",
    "usable_frames",
]
