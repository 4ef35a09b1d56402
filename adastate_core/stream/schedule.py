"""Sigma schedule of few-step flow-matching sampling (Self-Forcing family, REFERENCE.md §5).

`x_t = (1 - sigma) x0 + sigma noise`, model timestep `1000 sigma`, velocity `v = noise - x0`,
so `x0 = x_t - sigma v`. Step lists are "warped" onto Self-Forcing's 1000-entry grid of
shifted sigmas, built in float32 exactly as its scheduler does, so the timesteps fed to the
model are bit-identical to Self-Forcing's ([1000, 750, 500, 250], shift 5 ->
[1000, 937.5, 833.33, 625]). The arithmetic on latents runs in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

GRID_SIZE = 1000
MIN_SHIFT, MAX_SHIFT = 0.01, 100.0  # beyond these the first sigma overflows or flattens


def shift_sigma(sigma: Tensor, shift: float) -> Tensor:
    """sigma' = s sigma / (1 + (s - 1) sigma)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigma_grid(shift: float) -> Tensor:
    """Self-Forcing's 1000 shifted sigmas, float32, from 1 down to just above 0."""
    return shift_sigma(torch.linspace(1.0, 0.0, GRID_SIZE + 1, dtype=torch.float32)[:-1], shift)


@dataclass(frozen=True)
class SigmaSchedule:
    """Denoising steps of one chunk. `steps` are grid indices counted from the top (1000 =
    pure noise) as in Self-Forcing's `denoising_step_list`; any list and shift are allowed."""

    steps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = 5.0

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(
                "the step list is empty; give at least one step, e.g. 1000,750,500,250"
            )
        for step in self.steps:
            if not (math.isfinite(step) and 0.5 <= step <= GRID_SIZE):
                raise ValueError(
                    f"steps must lie in [1, 1000] (grid positions, 1000 = pure noise), got {step:g}"
                )
        grid = [int(round(step)) for step in self.steps]
        if any(b >= a for a, b in zip(grid, grid[1:])):
            raise ValueError(
                "steps must be strictly decreasing, highest (noisiest) first, e.g. "
                f"1000,750,500,250; got {','.join(f'{s:g}' for s in self.steps)}"
            )
        if not (math.isfinite(self.shift) and MIN_SHIFT <= self.shift <= MAX_SHIFT):
            raise ValueError(
                f"shift must be between {MIN_SHIFT:g} and {MAX_SHIFT:g} (5.0 for Wan2.1 1.3B), "
                f"got {self.shift:g}"
            )

    @property
    def sigmas(self) -> list[float]:
        """Warped sigmas (float32 grid values as Python floats), one per step."""
        grid = sigma_grid(self.shift)
        return [float(grid[GRID_SIZE - int(round(step))]) for step in self.steps]

    @property
    def timesteps(self) -> list[float]:
        """Model timesteps `1000 sigma` in float32, e.g. [1000, 937.5, 833.33, 625]."""
        return [float(torch.tensor(s, dtype=torch.float32) * GRID_SIZE) for s in self.sigmas]


def x0_from_velocity(x_t: Tensor, velocity: Tensor, sigma: float) -> Tensor:
    """Clean prediction `x_t - sigma v`, in float64, returned as float32."""
    return (x_t.double() - sigma * velocity.double()).float()


def renoise(x0: Tensor, noise: Tensor, sigma: float) -> Tensor:
    """`(1 - sigma) x0 + sigma noise`, in float64, returned as float32."""
    return ((1 - sigma) * x0.double() + sigma * noise.double()).float()
