"""The memory plan of a training run (`adastate train --dry-run`), from file headers only.

A model of the peak, not a profile (research/training_dmd.md §4): per trainable model fp32
weights + fp32 gradients + AdamW's two moments (16 B/parameter); the frozen teacher as it is
held (bf16, or 1 B/parameter for fp8); the fp32 EMA; activations of the larger of the two
updates with per-block checkpointing (block inputs of every grad-enabled call kept in fp32,
one block recomputed, the teacher's transient no-grad forward); the K/V window; a fixed
allowance for the CUDA context and allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import WanConfig
from .config import TrainConfig

GB = 1e9
GPU_OVERHEAD = 6 * GB  # CUDA context, cuBLAS/cuDNN workspaces, fragmentation


@dataclass(frozen=True)
class ModelInfo:
    config: WanConfig
    params: int
    held_bytes_per_param: float  # as held during training


@dataclass(frozen=True)
class MemoryPlan:
    rows: tuple[tuple[str, float], ...]
    peak: float

    def lines(self, available: float | None = None) -> list[str]:
        out = [f"  {name:<58} {b / GB:8.1f} GB" for name, b in self.rows]
        out.append(f"  {'estimated peak':<58} {self.peak / GB:8.1f} GB")
        if available is not None:
            out.append(f"  {'free on the device':<58} {available / GB:8.1f} GB")
        return out


def _tokens_per_frame(cfg: WanConfig, tc: TrainConfig) -> int:
    h, w = tc.stream.latent_size
    return (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])


def _block_peak(cfg: WanConfig, tokens: int, keys: int, compute: int) -> float:
    """Transient memory of one block on `tokens` queries over `keys` keys (no grad kept)."""
    return tokens * (cfg.ffn_dim * compute * 2 + cfg.dim * 4 * 8) + keys * cfg.dim * compute * 2


def plan_memory(
    tc: TrainConfig,
    generator: ModelInfo,
    critic: ModelInfo,
    teacher: ModelInfo,
    *,
    compute_bytes: int = 2,
    ema_on_device: bool = True,
    gpu: bool = True,
) -> MemoryPlan:
    s = tc.stream
    g = generator.config
    n_tok = _tokens_per_frame(g, tc)
    mb = tc.micro_batch
    rows: list[tuple[str, float]] = [
        ("generator: fp32 weights + grads + AdamW moments", 16.0 * generator.params),
        ("critic: fp32 weights + grads + AdamW moments", 16.0 * critic.params),
        ("teacher (frozen)", teacher.held_bytes_per_param * teacher.params),
    ]
    if ema_on_device:
        rows.append(("generator EMA (fp32)", 4.0 * generator.params))
    # generator update: each chunk's exit call keeps its block inputs (fp32 residual)
    live = 0
    for k in range(tc.chunks):
        live += s.state if (s.policy in ("adaptive", "adaptive+sink") and s.steady(k)) else 0
        live += s.chunk
    tokens_all = tc.frames * n_tok
    per_input = 4 if tc.checkpointing else 4 * 14  # no checkpointing: every activation kept
    saved_gen = mb * live * n_tok * g.dim * per_input * g.num_layers
    window_frames = s.anchor_frames + 2 * s.state + s.window + s.chunk
    kv = mb * 2 * g.num_layers * window_frames * n_tok * g.dim * compute_bytes
    t = teacher.config
    teacher_peak = mb * _block_peak(t, tokens_all, tokens_all, compute_bytes) + (
        mb * tokens_all * t.dim * 4 * 3
    )
    recompute = mb * _block_peak(g, (s.state + s.chunk) * n_tok, window_frames * n_tok, 4)
    gen_step = saved_gen + recompute + max(teacher_peak, kv)
    c = critic.config
    saved_critic = mb * tokens_all * c.dim * per_input * c.num_layers
    critic_step = saved_critic + mb * _block_peak(c, tokens_all, tokens_all, 4) + kv
    rows.append(
        (
            f"activations, generator update (micro-batch {mb}, "
            f"{'per-block checkpointing' if tc.checkpointing else 'no checkpointing'})",
            gen_step,
        )
    )
    rows.append((f"activations, critic update (micro-batch {mb})", critic_step))
    if gpu:
        rows.append(("CUDA context, workspaces, fragmentation (allowance)", GPU_OVERHEAD))
    static = sum(b for name, b in rows if not name.startswith("activations"))
    peak = static + max(gen_step, critic_step)
    return MemoryPlan(tuple(rows), peak)


def held_bytes(stored: torch.dtype, compute: torch.dtype, keep_fp8: bool) -> float:
    """Bytes per parameter of a frozen model as the loader holds it."""
    if stored in (torch.float8_e4m3fn, torch.float8_e5m2) and keep_fp8:
        return 1.0
    return float(torch.empty(0, dtype=compute).element_size())
