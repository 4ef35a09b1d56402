"""3-axis rotary position embedding of Wan2.1, for arbitrary (block-relative) frame positions.

A head of width d is split into (t, h, w) parts of d - 4(d//6), 2(d//6), 2(d//6) channels
(44/42/42 for d = 128). Axis part of width n rotates adjacent channel pairs (x[2i], x[2i+1]) by
the angle pos * 10000^(-2i/n). Angles are built in float64 from the positions themselves, so
any position works (the official 1024-entry tables are not needed).
"""

from __future__ import annotations

import torch
from torch import Tensor

THETA = 10000.0


def axis_angles(positions: Tensor, width: int, theta: float = THETA) -> Tensor:
    """positions: [P] -> angles [P, width // 2] in float64."""
    inv_freq = 1.0 / torch.pow(
        theta, torch.arange(0, width, 2, dtype=torch.float64, device=positions.device) / width
    )
    return positions.to(torch.float64)[:, None] * inv_freq[None, :]


def rope_angles(
    frame_positions: Tensor, height: int, width: int, split: tuple[int, int, int]
) -> Tensor:
    """Angles of every token of frames laid out (f, h, w).

    frame_positions: [F] temporal positions (any real values). Returns [F, height*width, d/2]
    float64, where d = sum(split).
    """
    device = frame_positions.device
    n_f = frame_positions.shape[0]
    a_t = axis_angles(frame_positions, split[0])
    a_h = axis_angles(torch.arange(height, device=device), split[1])
    a_w = axis_angles(torch.arange(width, device=device), split[2])
    angles = torch.cat(
        [
            a_t[:, None, None, :].expand(n_f, height, width, -1),
            a_h[None, :, None, :].expand(n_f, height, width, -1),
            a_w[None, None, :, :].expand(n_f, height, width, -1),
        ],
        dim=-1,
    )
    return angles.reshape(n_f, height * width, -1)


class RopeTable:
    """The rotations of `rope_angles` as complex numbers (complex64: the angles and their
    cos/sin are exact in float64, the rotation itself runs in fp32 as one complex multiply)."""

    def __init__(self, angles: Tensor):
        # [F, N, 1, d/2]: broadcast over batch and heads
        self.freqs = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)[:, :, None]

    @property
    def num_frames(self) -> int:
        return self.freqs.shape[0]

    def frames(self, start: int, stop: int) -> RopeTable:
        out = RopeTable.__new__(RopeTable)
        out.freqs = self.freqs[start:stop]
        return out

    def apply(self, x: Tensor, out_dtype: torch.dtype) -> Tensor:
        """x: [B, F, N, H, d] -> x with adjacent channel pairs rotated, same shape, `out_dtype`."""
        pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())
        return torch.view_as_real(pairs * self.freqs).flatten(-2).to(out_dtype)
