"""Attention share per cached key frame (paper Appendix E, Fig. 2a).

For one chunk and one denoising step, every layer's post-softmax self-attention weights of the
live queries are summed per key frame and averaged over heads and queries (Eq. 6); the mass on
the cached frames (the "off-diagonal" part: everything before the live chunk) is renormalised
to sum to 1 (Eq. 7) and averaged over layers. Softmax runs on slices of queries, so memory
stays bounded at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import CausalWanDiT
from ..stream import StreamError, StreamState, denoise_chunk, window_layout

SLICE_ELEMENTS = 1 << 24  # attention weights held at once (64 MB in fp32)


@dataclass(frozen=True)
class AttentionShares:
    """share: [F_cached] float64, the renormalised off-diagonal share of each cached key frame
    averaged over layers (sums to 1); per_layer: [layers, F_cached] (each row sums to 1);
    off_diagonal: mean (over layers) attention mass on cached frames before renormalising."""

    chunk_index: int
    step: int
    labels: tuple[str, ...]
    positions: tuple[float, ...]
    share: Tensor
    per_layer: Tensor
    off_diagonal: float


def frame_mass(q: Tensor, k: Tensor, frames: int) -> Tensor:
    """Mean attention mass per key frame.

    q: [B, Lq, H, d] roped queries; k: [B, Lk, H, d] roped keys of `frames` equal frames.
    Returns [frames] float64 summing to 1 (averaged over batch, heads and queries)."""
    b, lq, h, d = q.shape
    lk = k.shape[1]
    if lk % frames:
        raise ValueError(f"{lk} keys do not split into {frames} frames")
    kt = k.float().permute(0, 2, 3, 1)  # [B, H, d, Lk]
    rows = max(1, SLICE_ELEMENTS // max(1, b * h * lk))
    total = torch.zeros(frames, dtype=torch.float64, device=q.device)
    for start in range(0, lq, rows):
        qs = q[:, start : start + rows].float().permute(0, 2, 1, 3)  # [B, H, S, d]
        weights = torch.softmax((qs @ kt) / math.sqrt(d), dim=-1)  # [B, H, S, Lk]
        total += weights.unflatten(-1, (frames, lk // frames)).sum(dim=(0, 1, 2, 4)).double()
    return (total / (b * h * lq)).cpu()


class _Stop(Exception):
    pass


class _ProbedModel:
    """Forwards to the DiT; hands `probe` to the `step`-th forward call, then stops."""

    def __init__(self, model: CausalWanDiT, step: int, probe):
        self._model, self._step, self._probe, self._calls = model, step, probe, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, *args, **kwargs):
        call, self._calls = self._calls, self._calls + 1
        if call != self._step:
            return self._model(*args, **kwargs)
        self._model(*args, probe=self._probe, **kwargs)
        raise _Stop


def attention_shares(model: CausalWanDiT, stream: StreamState, step: int = 0) -> AttentionShares:
    """Attention share per cached key frame while denoising chunk `stream.chunk_index` at
    denoising step `step` (0 = the noisiest). The stream is not changed."""
    cfg = stream.config
    steps = len(cfg.schedule.steps)
    if not 0 <= step < steps:
        raise StreamError(f"step {step} does not exist: the schedule has steps 0..{steps - 1}")
    layout = window_layout(stream)
    n_cached = sum(seg.num_frames for seg in layout.segments)
    if n_cached == 0:
        raise StreamError(
            "the stream is at chunk 0: nothing is cached yet, so there is no attention on cache "
            "positions to measure; probe a stream after at least one Update State"
        )
    n_frames = n_cached + len(layout.live_positions)
    masses: list[Tensor] = []
    probe = _ProbedModel(model, step, lambda layer, q, k: masses.append(frame_mass(q, k, n_frames)))
    try:
        denoise_chunk(probe, stream)  # type: ignore[arg-type]
    except _Stop:
        pass
    mass = torch.stack(masses)  # [layers, frames]
    cached = mass[:, :n_cached]
    off = cached.sum(dim=1, keepdim=True)
    per_layer = cached / off
    labels, positions = [], []
    has_anchor = layout.steady and stream.anchor is not None
    for i, seg in enumerate(layout.segments):
        for j, pos in enumerate(seg.positions.tolist()):
            labels.append(f"anchor {j}" if has_anchor and i == 0 else f"cache {len(labels)}")
            positions.append(float(pos))
    return AttentionShares(
        stream.chunk_index,
        step,
        tuple(labels),
        tuple(positions),
        per_layer.mean(dim=0),
        per_layer,
        float(off.mean()),
    )


def render_bar_chart(
    values: list[float], labels: list[str], title: str, size: tuple[int, int] = (640, 360)
) -> Tensor:
    """A bar chart as a ComfyUI IMAGE [1, H, W, 3] float32 in 0..1 (PIL, default font)."""
    import numpy as np
    from PIL import Image, ImageDraw

    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill=(0, 0, 0))
    top, bottom, left, right = 40, height - 40, 40, width - 20
    draw.line([(left, bottom), (right, bottom)], fill=(0, 0, 0))
    draw.line([(left, top), (left, bottom)], fill=(0, 0, 0))
    peak = max([*values, 1e-12])
    n = max(1, len(values))
    slot = (right - left) / n
    for i, (value, label) in enumerate(zip(values, labels)):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        y0 = bottom - (bottom - top) * value / peak
        draw.rectangle([x0, y0, x1, bottom], fill=(66, 110, 200))
        draw.text((x0, max(top - 14, y0 - 14)), f"{value:.3f}", fill=(0, 0, 0))
        draw.text((x0, bottom + 6), label, fill=(0, 0, 0))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())[None]
