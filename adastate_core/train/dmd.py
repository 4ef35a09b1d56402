"""Distribution matching distillation (DMD) losses as Self-Forcing trains them, with AdaState's
horizon weight (paper Eq. 5, §3.3; research/training_dmd.md §1.4-1.5, §2).

Conventions (Self-Forcing's `FlowMatchScheduler`, REFERENCE.md §5): `x_t = (1 - σ) x0 + σ ε`,
the model predicts the velocity `ε - x0` at timestep `1000 σ`. Noise is added with the σ of the
grid entry nearest to t on the *generator's* shifted grid (shift 5); a score model turns its
velocity into x0 with the σ nearest to t on *its own* grid (Self-Forcing's bidirectional
wrappers use shift 8). Latent layout here is ours: [B, 16, F, h, w] (frames on dim 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..stream.schedule import sigma_grid

NUM_TRAIN_TIMESTEPS = 1000
MIN_STEP, MAX_STEP = 20, 980  # int(0.02 * 1000), int(0.98 * 1000)
GENERATOR_SHIFT = 5.0
SCORE_SHIFT = 8.0  # Self-Forcing's WanDiffusionWrapper default for the bidirectional models
GUIDANCE = 3.0  # pred = cond + 3 (cond - uncond), i.e. classic CFG scale 4

# Wan2.1's negative prompt (Self-Forcing configs/self_forcing_dmd.yaml `negative_prompt`)
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
    "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def horizon_weights(frames: int, alpha: float, dtype=torch.float64) -> Tensor:
    """w_f = 1 + α f / (F - 1) for f = 0..F-1, renormalised to mean 1 (α = 0: all ones).
    F = 1 gives [1]."""
    if frames < 1:
        raise ValueError("need at least one frame")
    if frames == 1:
        return torch.ones(1, dtype=dtype)
    w = 1.0 + alpha * torch.arange(frames, dtype=torch.float64) / (frames - 1)
    return (w / w.mean()).to(dtype)


def shifted_timesteps(raw: Tensor, shift: float = GENERATOR_SHIFT) -> Tensor:
    """Self-Forcing's DMD timestep: integer t ~ U{0..999} -> 1000·s(t/1000)/(1+(s-1)t/1000),
    clamped to [20, 980]. raw: [B] integers; returns float32 [B]."""
    t = raw.to(torch.float32)
    if shift > 1:
        t = shift * (t / 1000) / (1 + (shift - 1) * (t / 1000)) * 1000
    return t.clamp(MIN_STEP, MAX_STEP)


def grid_sigma(t: Tensor, shift: float) -> Tensor:
    """σ of the entry nearest to each timestep t ([B], in [0, 1000]) on the 1000-entry grid
    of the given shift (float32 [B])."""
    grid = sigma_grid(shift).to(t.device)
    idx = (grid[None, :] * NUM_TRAIN_TIMESTEPS - t.float()[:, None]).abs().argmin(dim=1)
    return grid[idx]


def _per_sample(value: Tensor, like: Tensor) -> Tensor:
    return value.reshape(-1, *([1] * (like.ndim - 1)))


def add_noise(x: Tensor, noise: Tensor, t: Tensor, shift: float = GENERATOR_SHIFT) -> Tensor:
    """(1 - σ) x + σ ε with σ the nearest grid entry of the generator's schedule; one t per
    sample (the same for all frames)."""
    sigma = _per_sample(grid_sigma(t, shift), x).to(x.dtype)
    return (1 - sigma) * x + sigma * noise


def x0_from_flow(xt: Tensor, flow: Tensor, t: Tensor, shift: float = SCORE_SHIFT) -> Tensor:
    """x0 = x_t - σ v in float64 (a score model's own grid), returned in x_t's dtype."""
    sigma = _per_sample(grid_sigma(t, shift), xt).double()
    return (xt.double() - sigma * flow.double()).to(xt.dtype)


def flow_from_x0(xt: Tensor, x0: Tensor, t: Tensor, shift: float = GENERATOR_SHIFT) -> Tensor:
    """v = (x_t - x0) / σ in float64 (the generator's grid), returned in x_t's dtype."""
    sigma = _per_sample(grid_sigma(t, shift), xt).double()
    return ((xt.double() - x0.double()) / sigma).to(xt.dtype)


def dmd_gradient(
    x: Tensor, pred_fake: Tensor, pred_real: Tensor, per_frame: bool = False
) -> Tensor:
    """(fake - real) / mean|x - real|, NaN -> 0. The normaliser is per sample over all frames
    (Self-Forcing) or, with `per_frame`, per sample and frame (over channels and pixels)."""
    grad = pred_fake - pred_real
    dims = [1, 3, 4] if per_frame else list(range(1, x.ndim))
    normaliser = (x - pred_real).abs().mean(dim=dims, keepdim=True)
    return torch.nan_to_num(grad / normaliser)


def dmd_loss(x: Tensor, grad: Tensor, weights: Tensor | None = None) -> Tensor:
    """0.5 · mean_w (x - sg(x - grad))² in float64, frames weighted by `weights` ([F], mean 1)
    along dim 2, so ∂L/∂x = w_f · grad / numel. No weights: Self-Forcing's exact loss."""
    xd = x.double()
    target = (xd - grad.double()).detach()
    if weights is None:
        return 0.5 * F.mse_loss(xd, target, reduction="mean")
    w = weights.to(device=x.device, dtype=torch.float64).reshape(1, 1, -1, 1, 1)
    return 0.5 * (w * (xd - target) ** 2).mean()


def flow_matching_loss(flow_pred: Tensor, noise: Tensor, x: Tensor) -> Tensor:
    """The critic's loss: mean (v_pred - (ε - x))² (Self-Forcing's FlowPredLoss)."""
    return torch.mean((flow_pred.float() - (noise - x).float()) ** 2)


@dataclass(frozen=True)
class DmdStats:
    loss: float
    grad_abs_mean: float  # Self-Forcing's `dmdtrain_gradient_norm`
    grad_abs_per_frame: tuple[float, ...]
    timesteps: tuple[float, ...]
