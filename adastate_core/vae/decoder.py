"""WanVAEDecoder: the Wan2.1 VAE decoder (plus its 1x1x1 `conv2`), streamed chunk by chunk.

The math is the official Wan2.1 `WanVAE_.decode` (REFERENCE.md §3); parameter names are the
official ones (`decoder.*`, `conv2.*`), so `wan_2.1_vae.safetensors` loads directly.

Streaming. Everything in the decoder works on one frame at a time except the causal 3D convs
(kernel 3 in time) and the temporal upsamples. Like the official code, the decoder runs one
latent frame per call and hands each causal conv the trailing input frames of the calls before
(its *history*). Those histories are the `DecoderCache`, a value: `decode_chunk` takes one and
returns a new one, and never writes to a tensor it was given. Decoding chunk by chunk with the
cache passed along is therefore the very same computation as decoding the whole video at once.

    first latent:  1 frame out   (every conv sees zero padding; the temporal upsamples skip
                                  their time conv: the official "Rep" state)
    later latents: 4 frames out  (time convs start from zero history after the first latent)

A cache pre-filled with zeros is not the same as no cache: it skips the "Rep" step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Per-channel statistics of Wan2.1 latents: the DiT works on z = (mu - mean) / std.
LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

HISTORY_FRAMES = 2  # trailing input frames a causal conv keeps (its kernel is 3 frames long)
TIME_FACTOR = 4  # video frames per latent frame (after the first)
SPACE_FACTOR = 8  # pixels per latent pixel, each side


def video_frames(latent_frames: int, first: bool) -> int:
    """Frames `decode_chunk` returns for `latent_frames` latents: 1 + 4(F-1) first, then 4F."""
    if latent_frames <= 0:
        return 0
    return 1 + TIME_FACTOR * (latent_frames - 1) if first else TIME_FACTOR * latent_frames


# ----------------------------------------------------------------------------------------------
# the cache


@dataclass(frozen=True)
class DecoderCache:
    """The causal state of a video being decoded: what the next latent frame needs to see.

    histories: one tensor per causal conv in call order (32 for Wan2.1), each the last <= 2
        frames of that conv's *input*, [B, C, <=2, h, w] at that conv's resolution. A temporal
        upsample's time conv holds 0 frames right after the first latent: the official "Rep"
        state (the first latent skipped the time conv; the next one starts from zero history).
    latent_frames: latent frames decoded so far in this video.

    Size at 480x832 (dim 96, steady state with 2 frames everywhere): 0.94 G elements, 1.89 GB
    in bf16 (3.78 GB fp32), three quarters of it at full resolution; see
    `estimate_cache_bytes`. It lives on the decoder's device; budget it beside the DiT.
    """

    histories: tuple[Tensor, ...]
    latent_frames: int

    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.histories)

    def to(self, device: str | torch.device) -> DecoderCache:
        """The same cache on another device (a new value; this one is unchanged)."""
        return replace(self, histories=tuple(h.to(device) for h in self.histories))

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(B, z_dim, h, w) of the latents this cache continues (from the first conv's input)."""
        b, c, _, h, w = self.histories[0].shape
        return b, c, h, w


def _tail(history: Tensor | None, x: Tensor) -> Tensor:
    """The last HISTORY_FRAMES frames of `history` followed by `x`, in storage of its own."""
    if history is not None and x.shape[2] < HISTORY_FRAMES and history.shape[2] > 0:
        keep = HISTORY_FRAMES - x.shape[2]
        return torch.cat([history[:, :, -keep:], x], dim=2)
    tail = x[:, :, -HISTORY_FRAMES:]
    if tail.untyped_storage().nbytes() > tail.numel() * tail.element_size():
        return tail.clone()  # do not pin a larger activation (or a slice of the input)
    return tail


class _Step:
    """The histories one decoder call (one latent frame) reads and writes, in conv order."""

    def __init__(self, old, consume: bool = False):
        self.old = old  # a tuple, or with `consume` a list whose entries are dropped when read
        self.consume = consume
        self.new: list[Tensor] = []

    @property
    def first(self) -> bool:
        """True for the first latent frame of a video: no conv has seen a frame yet."""
        return self.old is None

    def conv(self, conv: CausalConv3d, x: Tensor) -> Tensor:
        i = len(self.new)
        history = None if self.old is None else self.old[i]
        self.new.append(_tail(history, x))
        if self.consume and self.old is not None:
            self.old[i] = None  # read for the last time: freed once this conv has run
        return conv(x, history)

    def rep(self, x: Tensor) -> None:
        """The temporal upsample skipped its time conv: record an empty ("Rep") history."""
        b, c, _, h, w = x.shape
        self.new.append(x.new_empty((b, c, 0, h, w)))


# ----------------------------------------------------------------------------------------------
# layers


class CausalConv3d(nn.Conv3d):
    """Conv3d that is causal in time: the frames before `x` come from `history` and are
    zero-padded in front up to kernel_t - 1 frames. Space is padded symmetrically as usual.

    x: [B, C, T, H, W]; history: [B, C, <=2, H, W] or None -> [B, C_out, T, H', W'].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        padding: int | tuple[int, int, int] = 0,
    ):
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        super().__init__(in_channels, out_channels, k, padding=(0, p[1], p[2]))
        self.context = 2 * p[0]  # frames of the past each output frame sees

    def forward(self, x: Tensor, history: Tensor | None = None) -> Tensor:
        if self.context:
            have = 0 if history is None else min(history.shape[2], self.context)
            parts = [history[:, :, history.shape[2] - have :]] if have else []
            if have < self.context:
                b, c, _, h, w = x.shape
                parts.insert(0, x.new_zeros((b, c, self.context - have, h, w)))
            x = torch.cat([*parts, x], dim=2)
        return conv3d(x, self.weight, self.bias, self.padding)


def conv3d(x: Tensor, weight: Tensor, bias: Tensor | None, padding: Sequence[int]) -> Tensor:
    """F.conv3d, but always through oneDNN for fp32 on CPU: PyTorch's heuristic sends the
    few-frame convs of a streamed decoder to its slow reference kernel (2-7x slower here)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN:
        return torch.ops.aten.mkldnn_convolution(
            x.contiguous(), weight, bias, list(padding), [1, 1, 1], [1, 1, 1], 1
        )
    return F.conv3d(x, weight, bias, padding=tuple(padding))


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution")


class RMSNorm(nn.Module):
    """L2-normalise over channels, times sqrt(C) and a per-channel gain (the VAE's RMS_norm).

    Same as F.normalize (1 / max(norm, 1e-12)), with the sum of squares in fp32 and written
    so the channel reduction is fast on CPU. x: [B, C, ...]; `images`: for 4-D input.

    A bf16 input makes no full-size fp32 temporary (the decoder's largest memory cost on a
    GPU): the norm is reduced in fp32 straight from x, then x is scaled in bf16 by 1/norm and
    the gain, each rounded to bf16. That is as many roundings as the official bf16 code
    (F.normalize, * scale, * gamma, all in bf16) and no less accurate than it
    (tests/test_vae.py). fp16 (whose range cannot hold 1/norm of a near-zero vector) and fp32
    are computed in fp32 as before.
    """

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        gain = self.gamma.float() * self.scale
        if x.dtype == torch.bfloat16:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
            inv_norm = norm.clamp_min_(1e-12).reciprocal_().to(x.dtype)
            return (x * inv_norm).mul_(gain.to(x.dtype))
        xf = x.float()
        inv_norm = xf.square().sum(1, keepdim=True).clamp_min_(1e-24).rsqrt_()
        if xf is not x:  # fp16: scale its fp32 copy in place (one temporary less)
            return xf.mul_(inv_norm).mul_(gain).to(x.dtype)
        return (xf * inv_norm).mul_(gain)


class ResidualBlock(nn.Module):
    """norm, SiLU, causal conv, norm, SiLU, causal conv; plus a 1x1x1 shortcut if C changes.

    `residual` keeps the official layer indices (0 norm, 2 conv, 3 norm, 6 conv).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.residual = nn.ModuleList(
            [
                RMSNorm(in_dim),
                nn.SiLU(),
                CausalConv3d(in_dim, out_dim, 3, padding=1),
                RMSNorm(out_dim),
                nn.SiLU(),
                nn.Identity(),  # dropout in training
                CausalConv3d(out_dim, out_dim, 3, padding=1),
            ]
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, step: _Step) -> Tensor:
        norm1, _, conv1, norm2, _, _, conv2 = self.residual
        h = step.conv(conv1, F.silu(norm1(x), inplace=True))
        h = step.conv(conv2, F.silu(norm2(h), inplace=True))
        return h.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the h*w positions of each frame (frames do not mix).

    x: [B, C, T, h, w] -> same.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames)).reshape(b * t, 3, c, h * w).transpose(2, 3)
        q, k, v = qkv.unsqueeze(2).unbind(1)  # each [b*t, 1, h*w, c]
        y = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        y = self.proj(y.reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2) + x


class Upsample(nn.Module):
    """Nearest 2x in space and a 3x3 conv halving the channels ("upsample2d"); with `temporal`
    a causal time conv first doubles the frames ("upsample3d"), except on the first latent.

    `resample` keeps the official indices (0 the upsampling, 1 the conv).
    x: [B, C, T, h, w] -> [B, C/2, T' , 2h, 2w] with T' = 2T, or T on the first latent.
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.ModuleList(
            [
                nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                nn.Conv2d(dim, dim // 2, 3, padding=1),
            ]
        )
        self.temporal = temporal
        if temporal:
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor, step: _Step) -> Tensor:
        if self.temporal:
            if step.first:
                step.rep(x)
            else:
                b, c, t, h, w = x.shape
                y = step.conv(self.time_conv, x)  # [B, 2C, T]: first half even frames
                x = y.reshape(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact")
        conv = self.resample[1]
        return conv3d(x, conv.weight.unsqueeze(2), conv.bias, (0, 1, 1))


class Decoder(nn.Module):
    """conv1 -> middle (res, attention, res) -> upsample stages -> norm, SiLU, conv to RGB.

    Stage channels for base dim d: 4d, 4d, 2d, d (the first stage stays at 4d); every stage has
    num_res_blocks + 1 residual blocks, all but the last end in an upsample.
    """

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: Sequence[int],
        num_res_blocks: int,
        temporal_upsample: Sequence[bool],
    ):
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *reversed(dim_mult))]
        self.conv1 = CausalConv3d(z_dim, dims[0], 3, padding=1)
        self.middle = nn.ModuleList(
            [
                ResidualBlock(dims[0], dims[0]),
                AttentionBlock(dims[0]),
                ResidualBlock(dims[0], dims[0]),
            ]
        )
        upsamples: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous stage's upsample halved the channels
            for _ in range(num_res_blocks + 1):
                upsamples.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i < len(dim_mult) - 1:
                upsamples.append(Upsample(out_dim, temporal=temporal_upsample[i]))
        self.upsamples = nn.ModuleList(upsamples)
        self.head = nn.ModuleList(
            [RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1)]
        )

    def forward(self, x: Tensor, step: _Step) -> Tensor:
        """x: [B, z_dim, 1, h, w] (one latent frame) -> [B, 3, 1 or 4, 8h, 8w]."""
        x = step.conv(self.conv1, x)
        res1, attention, res2 = self.middle
        x = res2(attention(res1(x, step)), step)
        for layer in self.upsamples:
            x = layer(x, step)
        norm, _, conv = self.head
        return step.conv(conv, F.silu(norm(x), inplace=True))


# ----------------------------------------------------------------------------------------------
# the model


class WanVAEDecoder(nn.Module):
    """The Wan2.1 VAE decoder: latents [B, 16, F, h, w] -> video [B, 3, T, 8h, 8w].

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
        temporal_upsample: Sequence[bool] = (True, True, False),
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ):
        super().__init__()
        self.dim, self.z_dim = dim, z_dim
        with torch.device(device or "cpu"):
            self.conv2 = CausalConv3d(z_dim, z_dim, 1)
            self.decoder = Decoder(dim, z_dim, dim_mult, num_res_blocks, temporal_upsample)
        self.to(dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    def denormalise(self, z: Tensor) -> Tensor:
        """DiT latents -> raw VAE latents: z * std + mean per channel (fp32, new tensor)."""
        if z.shape[1] != len(LATENT_MEAN):
            raise ValueError(
                f"the Wan latent statistics are for 16 channels, this latent has {z.shape[1]}"
            )
        key = str(z.device)
        stats = self.__dict__.setdefault("_latent_stats", {}).get(key)
        if stats is None:  # copied to the device once, not in every call (each copy syncs)
            stats = tuple(
                torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1, 1).to(z.device)
                for v in (LATENT_MEAN, LATENT_STD)
            )
            self.__dict__["_latent_stats"][key] = stats
        mean, std = stats
        return z.float() * std + mean

    @torch.no_grad()
    def decode_chunk(
        self,
        z: Tensor,
        cache: DecoderCache | None = None,
        *,
        normalised: bool = True,
        clamp: bool = True,
        on_frame: Callable[[int, int], None] | None = None,
        consume: bool = False,
    ) -> tuple[Tensor, DecoderCache]:
        """Decode the next latent frames of a video, continuing from `cache` (None: new video).

        z: [B, 16, F, h, w], normalised (DiT space) or raw (`normalised=False`, e.g. a ComfyUI
        LATENT). Returns (video, new cache); video: [B, 3, T, 8h, 8w] fp32 with T = 1 + 4(F-1)
        for the first chunk of a video and 4F after, in [0, 1] (clamped to [-1, 1] then mapped
        (x+1)/2), or the raw [-1, 1]-space decoder output with `clamp=False`. Neither `z` nor
        `cache` is modified. `on_frame(done, total)` runs after each latent frame (progress);
        an exception it raises (e.g. a Cancel) abandons the chunk, `cache` still intact.

        consume: the streaming fast path for a caller that will never use `cache` again
        (the whole-stream loop): its histories are taken out of it and each is freed as soon
        as the conv that reads it has run, so about one generation of the ~1.9 GB cache is
        alive instead of up to three. Same numbers; `cache` is left empty (and is lost if an
        exception abandons the chunk).
        """
        self._check_input(z, cache)
        x = self.denormalise(z) if normalised else z
        x = self.conv2(x.to(device=self.device, dtype=self.dtype))
        histories = None if cache is None else cache.histories
        if consume and cache is not None:
            histories = list(histories)
            object.__setattr__(cache, "histories", ())  # the caller gave it up
        frames = []
        for i in range(x.shape[2]):  # one latent frame per decoder call, as the official code
            step = _Step(histories, consume)
            frames.append(self.decoder(x[:, :, i : i + 1], step))
            histories = step.new if consume else tuple(step.new)
            del step
            if on_frame is not None:
                on_frame(i + 1, x.shape[2])
        histories = tuple(histories)
        video = torch.cat(frames, dim=2).float()
        if clamp:
            video = video.clamp_(-1.0, 1.0).add_(1.0).mul_(0.5)
        done = 0 if cache is None else cache.latent_frames
        return video, DecoderCache(histories, done + x.shape[2])

    def decode(self, z: Tensor, *, normalised: bool = True, clamp: bool = True) -> Tensor:
        """Decode a whole video at once: z [B, 16, F, h, w] -> [B, 3, 1 + 4(F-1), 8h, 8w]."""
        return self.decode_chunk(z, None, normalised=normalised, clamp=clamp)[0]

    forward = decode

    def _check_input(self, z: Tensor, cache: DecoderCache | None) -> None:
        if z.dim() != 5 or z.shape[1] != self.z_dim or z.shape[2] == 0:
            raise ValueError(f"expected latents [B, {self.z_dim}, F>=1, h, w], got {list(z.shape)}")
        if cache is None:
            return
        b, c, h, w = cache.latent_shape
        if (b, c, h, w) != (z.shape[0], z.shape[1], z.shape[3], z.shape[4]):
            raise ValueError(
                f"this decoder cache continues latents of shape [{b}, {c}, F, {h}, {w}], not "
                f"{list(z.shape)}; pass cache=None to start a new video"
            )
        first = cache.histories[0]
        if first.device != self.device or first.dtype != self.dtype:
            raise ValueError(
                f"the decoder cache is {first.dtype} on {first.device}, the decoder "
                f"{self.dtype} on {self.device}; move it with cache.to(device) or decode with "
                "the decoder that made it"
            )


def estimate_cache_bytes(
    height: int,
    width: int,
    dtype: torch.dtype = torch.bfloat16,
    *,
    dim: int = 96,
    z_dim: int = 16,
    batch: int = 1,
) -> int:
    """Bytes of a steady-state `DecoderCache` for video of height x width pixels.

    Computed by decoding 3 latent frames on the meta device (no memory, no compute), so it is
    exactly what `decode_chunk` keeps. 480x832, dim 96, bf16: 1.89 GB (0.94 G elements).
    """
    model = WanVAEDecoder(dim, z_dim, dtype=dtype, device="meta")
    z = torch.zeros(batch, z_dim, 3, height // SPACE_FACTOR, width // SPACE_FACTOR, device="meta")
    _, cache = model.decode_chunk(z, normalised=False, clamp=False)
    return cache.nbytes()
