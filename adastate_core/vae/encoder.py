"""WanVAEEncoder: the Wan2.1 VAE encoder (plus its 1x1x1 `conv1`), streamed chunk by chunk.

The math is the official Wan2.1 `WanVAE_.encode`: the first frame alone, then 4 frames per
encoder call with the causal feature cache; `conv1`; the mean half of its output; normalised
as the DiT expects, (mu - mean) * (1 / std). Parameter names are the official ones
(`encoder.*`, `conv1.*`), so `wan_2.1_vae.safetensors` loads directly.

Streaming, as the decoder: every causal 3D conv (kernel 3 in time) reads the trailing input
frames of the calls before (its *history*), and each temporal downsample (a time conv of
kernel 3, stride 2, no padding) reads the last frame before its input. Those are the
`EncoderCache`, a value: `encode_chunk` takes one and returns a new one and never writes to a
tensor it was given. The encoder always runs one call per latent frame (1 video frame for the
first, then 4), whatever grouping the caller feeds, so encoding in any grouping (1 frame, then
multiples of 4) is the very same computation as encoding the whole video at once.

    first frame:  -> 1 latent   (every conv sees zero padding; a temporal downsample passes
                                 its one frame through and keeps it)
    4 frames:     -> 1 latent   (stride-2 time convs over [last kept frame, 4 | 2 frames])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import (
    LATENT_MEAN,
    LATENT_STD,
    SPACE_FACTOR,
    TIME_FACTOR,
    AttentionBlock,
    CausalConv3d,
    ResidualBlock,
    RMSNorm,
    _Step,
)


def latent_frames(video_frames: int, first: bool) -> int:
    """Latents `encode_chunk` returns for `video_frames` frames: 1 + (T-1)/4 first, then T/4."""
    if video_frames <= 0:
        return 0
    return 1 + (video_frames - 1) // TIME_FACTOR if first else video_frames // TIME_FACTOR


@dataclass(frozen=True)
class EncoderCache:
    """The causal state of a video being encoded: what the next 4 frames need to see.

    histories: one tensor per causal conv and temporal downsample, in call order: a conv's
        last <= 2 input frames, a downsample's last input frame ([B, C, T, h, w] at its
        resolution).
    video_frames: frames encoded so far (1 + 4k).
    """

    histories: tuple[Tensor, ...]
    video_frames: int

    @property
    def latent_frames(self) -> int:
        return latent_frames(self.video_frames, True)

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.histories)

    def to(self, device: str | torch.device) -> EncoderCache:
        return replace(self, histories=tuple(h.to(device) for h in self.histories))

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """(B, H, W) of the video this cache continues (from the first conv's input)."""
        b, _, _, h, w = self.histories[0].shape
        return b, h, w


class _EncoderStep(_Step):
    def down(self, time_conv: nn.Conv3d, x: Tensor) -> Tensor:
        """A temporal downsample: the first frame of a video passes (and is kept); later
        frames go through the stride-2 time conv after the kept frame of the call before."""
        i = len(self.new)
        history = None if self.old is None else self.old[i]
        last = x[:, :, -1:]
        self.new.append(last.clone() if last.untyped_storage().nbytes() > last.nbytes else last)
        if self.consume and self.old is not None:
            self.old[i] = None
        if history is None:
            return x
        return F.conv3d(
            torch.cat([history[:, :, -1:], x], dim=2),
            time_conv.weight,
            time_conv.bias,
            stride=time_conv.stride,
        )


class Downsample(nn.Module):
    """Zero-pad right/bottom by 1 and a 3x3 stride-2 conv per frame ("downsample2d"); with
    `temporal` a causal stride-2 time conv then halves the frames ("downsample3d").

    `resample` keeps the official indices (0 the padding, 1 the conv).
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.ModuleList(
            [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2)]
        )
        self.temporal = temporal
        if temporal:
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: Tensor, step: _EncoderStep) -> Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # per frame, as the official Conv2d
        frames = self.resample[1](F.pad(frames, (0, 1, 0, 1)))
        x = frames.reshape(b, t, c, *frames.shape[2:]).transpose(1, 2)
        if self.temporal:
            x = step.down(self.time_conv, x)
        return x


class Encoder(nn.Module):
    """conv1 -> down stages (residual blocks, then a downsample) -> middle (res, attention,
    res) -> norm, SiLU, conv to 2 x z_dim channels (mean and log-variance).

    Stage channels for base dim d: d, 2d, 4d, 4d; `temporal_downsample[i]` says whether stage
    i's downsample also halves time (Wan2.1: the last two).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        temporal_downsample: Sequence[bool],
    ):
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        downsamples: list[nn.Module] = []
        for i, (in_dim, stage_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(num_res_blocks):
                downsamples.append(ResidualBlock(in_dim, stage_dim))
                in_dim = stage_dim
            if i < len(dim_mult) - 1:
                downsamples.append(Downsample(stage_dim, temporal=temporal_downsample[i]))
        self.downsamples = nn.ModuleList(downsamples)
        top = dims[-1]
        self.middle = nn.ModuleList(
            [ResidualBlock(top, top), AttentionBlock(top), ResidualBlock(top, top)]
        )
        self.head = nn.ModuleList(
            [RMSNorm(top), nn.SiLU(), CausalConv3d(top, out_dim, 3, padding=1)]
        )

    def forward(self, x: Tensor, step: _EncoderStep) -> Tensor:
        """x: [B, 3, 1 or 4, H, W] -> [B, out_dim, 1, H/8, W/8]."""
        x = step.conv(self.conv1, x)
        for layer in self.downsamples:
            x = layer(x, step)
        res1, attention, res2 = self.middle
        x = res2(attention(res1(x, step)), step)
        norm, _, conv = self.head
        return step.conv(conv, F.silu(norm(x), inplace=True))


class WanVAEEncoder(nn.Module):
    """The Wan2.1 VAE encoder: video [B, 3, T, H, W] in [-1, 1] -> latents [B, 16, F, H/8, W/8].

    dim: base channels (96 for the real VAE); z_dim: latent channels (16). Parameters are
    created in `dtype` on `device`; compute runs in the parameters' dtype (norms normalise in
    fp32), the output is fp32.
    """

    def __init__(
        self,
        dim: int = 96,
        z_dim: int = 16,
        *,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        temporal_downsample: Sequence[bool] = (False, True, True),
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        super().__init__()
        self.dim, self.z_dim = dim, z_dim
        with torch.device(device or "cpu"):
            self.encoder = Encoder(dim, 2 * z_dim, dim_mult, num_res_blocks, temporal_downsample)
            self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)
        self.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv1.weight.device

    def normalise(self, mu: Tensor) -> Tensor:
        """Raw VAE means -> DiT latents: (mu - mean) * (1 / std) per channel, fp32."""
        key = str(mu.device)
        stats = self.__dict__.setdefault("_latent_stats", {}).get(key)
        if stats is None:
            mean = torch.tensor(LATENT_MEAN, dtype=torch.float32).view(1, -1, 1, 1, 1)
            inv_std = 1.0 / torch.tensor(LATENT_STD, dtype=torch.float32).view(1, -1, 1, 1, 1)
            stats = (mean.to(mu.device), inv_std.to(mu.device))
            self.__dict__["_latent_stats"][key] = stats
        mean, inv_std = stats
        return (mu.float() - mean) * inv_std

    @torch.no_grad()
    def encode_chunk(
        self,
        video: Tensor,
        cache: EncoderCache | None = None,
        *,
        normalise: bool = True,
        on_latent: Callable[[int, int], None] | None = None,
    ) -> tuple[Tensor, EncoderCache]:
        """Encode the next frames of a video, continuing from `cache` (None: a new video).

        video: [B, 3, T, H, W] pixels in [-1, 1], H and W multiples of 8; T = 1 + 4k for the
        first chunk of a video (k >= 0), a multiple of 4 after. Returns (latents, new cache):
        latents [B, 16, F, H/8, W/8] fp32 with F = 1 + (T-1)/4 first, T/4 after, normalised
        for the DiT (or the raw means with `normalise=False`). Neither `video` nor `cache` is
        modified. `on_latent(done, total)` runs after each latent (progress)."""
        self._check_input(video, cache)
        x = video.to(device=self.device, dtype=self.dtype)
        groups = []
        start = 0
        if cache is None:
            groups.append((0, 1))
            start = 1
        groups += [(s, s + TIME_FACTOR) for s in range(start, x.shape[2], TIME_FACTOR)]
        histories = None if cache is None else cache.histories
        outs = []
        for n, (a, b) in enumerate(groups):
            step = _EncoderStep(histories)
            out = self.encoder(x[:, :, a:b], step)
            outs.append(self.conv1(out)[:, : self.z_dim])
            histories = tuple(step.new)
            if on_latent is not None:
                on_latent(n + 1, len(groups))
        mu = torch.cat(outs, dim=2)
        latents = self.normalise(mu) if normalise else mu.float()
        done = 0 if cache is None else cache.video_frames
        return latents, EncoderCache(histories, done + x.shape[2])

    def encode(self, video: Tensor, *, normalise: bool = True) -> Tensor:
        """Encode a whole video at once: [B, 3, 1 + 4k, H, W] -> [B, 16, 1 + k, H/8, W/8]."""
        return self.encode_chunk(video, None, normalise=normalise)[0]

    forward = encode

    def _check_input(self, video: Tensor, cache: EncoderCache | None) -> None:
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] == 0:
            raise ValueError(f"expected video [B, 3, T>=1, H, W], got {list(video.shape)}")
        h, w = video.shape[3], video.shape[4]
        if h % SPACE_FACTOR or w % SPACE_FACTOR:
            raise ValueError(f"video height and width must be multiples of 8, got {h}x{w}")
        t = video.shape[2]
        if cache is None and (t - 1) % TIME_FACTOR:
            raise ValueError(
                f"the first chunk of a video must have 1 + 4k frames (1, 5, 9, ...), got {t}"
            )
        if cache is not None:
            if t % TIME_FACTOR:
                raise ValueError(f"after the first chunk, frames come in multiples of 4, got {t}")
            b, hh, ww = cache.frame_shape
            if (b, hh, ww) != (video.shape[0], h, w):
                raise ValueError(
                    f"this encoder cache continues video of shape [{b}, 3, T, {hh}, {ww}], not "
                    f"{list(video.shape)}; pass cache=None to start a new video"
                )


__all__ = ["EncoderCache", "WanVAEEncoder", "latent_frames"]
