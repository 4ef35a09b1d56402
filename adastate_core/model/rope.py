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
    """cos/sin of `rope_angles`, in the dtype the rotation is computed in."""

    def __init__(self, angles: Tensor, dtype: torch.dtype):
        # [F, N, 1, d/2]: broadcast over heads
        self.cos = torch.cos(angles).to(dtype)[:, :, None, :]
        self.sin = torch.sin(angles).to(dtype)[:, :, None, :]

    @property
    def num_frames(self) -> int:
        return self.cos.shape[0]

    def frames(self, start: int, stop: int) -> RopeTable:
        out = RopeTable.__new__(RopeTable)
        out.cos, out.sin = self.cos[start:stop], self.sin[start:stop]
        return out

    def apply(self, x: Tensor, out_dtype: torch.dtype) -> Tensor:
        """x: [B, F, N, H, d] -> rotated, same shape, `out_dtype`."""
        pairs = x.to(self.cos.dtype).unflatten(-1, (-1, 2))
        x0, x1 = pairs[..., 0], pairs[..., 1]
        rotated = torch.stack(
            (x0 * self.cos - x1 * self.sin, x0 * self.sin + x1 * self.cos), dim=-1
        )
        return rotated.flatten(-2).to(out_dtype)
