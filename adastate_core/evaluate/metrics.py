"""Offline video metrics for the anchor trade-off the paper measures (dynamics vs consistency vs
drift), on any frame array, CPU-fast, with no model weights: OpenCV's DIS optical flow and
numpy. Definitions follow VBench where VBench's own recipe needs no network model
(../shared/research/metrics_and_data.md):

* dynamic degree (VBench `dynamic_degree`, RAFT replaced by DIS flow, MEDIUM preset): frames
  sampled every round(fps / 8); per pair the mean of the largest 5 % flow magnitudes; a pair
  moves if that exceeds 6 * min(H, W) / 256 px; a video is dynamic if at least
  round(4 * sampled / 16) pairs move. Reported: that binary, the fraction of moving pairs, the
  VBench-Long fraction of dynamic 2-second clips (the primary number: the binary saturates on
  long videos), and the continuous mean / top-5 % flow.
* temporal flicker (VBench `temporal_flickering`, exact): mean absolute difference of
  consecutive frames (0-255) and score (255 - MAE) / 255; plus the motion-compensated
  residual (frame t+1 warped onto t with DIS flow, MAE inside an 8 px border), which separates
  flicker from motion.
* motion smoothness proxy (VBench's recipe with DIS instead of AMT): the midpoint of frames
  2i and 2i+2 interpolated by flow, compared with frame 2i+1, (255 - MAE) / 255.
* per-second curves: content drift from the first second (1 - correlation of standardised
  grey 32x18 thumbnails: structure, not colour or brightness) and quality drift relative to
  the first 3 s (sharpness = Laplacian variance, saturation, luminance, RMS contrast, each as
  a ratio), kept apart: a colour fade is degradation, a scene that moves on is content.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

CLIP_SECONDS = 2.0  # VBench-Long's dynamic-degree clip length


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - the eval extra
        raise ImportError(
            "video metrics need OpenCV: pip install opencv-python-headless (the `eval` extra)"
        ) from err
    return cv2


def _grey(frame: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def flow(a: np.ndarray, b: np.ndarray, preset: str = "medium") -> np.ndarray:
    """DIS optical flow from grey frame a to grey frame b: [H, W, 2] pixels."""
    cv2 = _cv2()
    presets = {
        "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
        "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
        "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    }
    dis = cv2.DISOpticalFlow_create(presets[preset])
    return dis.calc(a, b, None)


def top_fraction_mean(values: np.ndarray, fraction: float) -> float:
    """Mean of the largest `fraction` of `values` (VBench: int(n * fraction) of them, >= 1)."""
    flat = values.reshape(-1)
    k = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean())


def motion_threshold(height: int, width: int) -> float:
    """VBench's per-pair motion threshold, scaled with the resolution: 6 * min(H, W) / 256."""
    return 6.0 * min(height, width) / 256.0


def count_needed(sampled_frames: int) -> int:
    """VBench's moving-pair count for a dynamic video: round(4 * sampled / 16)."""
    return int(round(4 * sampled_frames / 16))


def _warp(frame: np.ndarray, flow_to: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Backward warp: out(p) = frame(p + scale * flow_to(p))."""
    cv2 = _cv2()
    h, w = flow_to.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + scale * flow_to[..., 0]
    my = gy + scale * flow_to[..., 1]
    return cv2.remap(frame, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class VideoMetrics:
    """Every number for one video (summary) and its per-second curves."""

    frames: int
    fps: float
    height: int
    width: int
    dynamic: bool  # VBench's whole-video binary
    moving_pairs: int
    pairs_needed: int
    moving_fraction: float
    dynamic_clips: float  # VBench-Long: fraction of dynamic 2 s clips (nan if shorter)
    flow_mean: float  # px per sampled pair (~1/8 s), VBench's unit
    flow_top5: float
    flow_per_frame: float  # flow_mean / the sampling interval: px per video frame
    threshold_px: float
    flicker_mae: float
    flicker_score: float
    mc_residual: float
    smoothness: float
    content_drift_end: float
    sharpness_end: float
    saturation_end: float
    luminance_end: float
    contrast_end: float
    curves: dict = field(default_factory=dict)  # name -> per-second list

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("curves")
        return out


def _per_second(values: list[float], frame_index: list[int], fps: float) -> list[float]:
    seconds = int(math.ceil((max(frame_index) + 1) / fps)) if frame_index else 0
    out = []
    for s in range(seconds):
        sel = [v for v, i in zip(values, frame_index) if s * fps <= i < (s + 1) * fps]
        out.append(float(np.mean(sel)) if sel else float("nan"))
    return out


def evaluate_frames(frames: np.ndarray, fps: float = 16.0, on_progress=None) -> VideoMetrics:
    """All metrics of uint8 RGB frames [T, H, W, 3] at `fps`. `on_progress(done, total)`."""
    cv2 = _cv2()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    if t < 2:
        raise ValueError("a video needs at least 2 frames to measure motion and flicker")
    grey = [_grey(f) for f in frames]
    steps = 3 * t
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if on_progress is not None:
            on_progress(min(done, steps), steps)

    # dynamic degree on the ~8 fps sampled frames
    interval = max(1, int(round(fps / 8)))
    sampled = list(range(0, t, interval))
    thres = motion_threshold(h, w)
    scores, means = [], []
    for a, b in zip(sampled[:-1], sampled[1:]):
        mag = np.linalg.norm(flow(grey[a], grey[b]), axis=-1)
        scores.append(top_fraction_mean(mag, 0.05))
        means.append(float(mag.mean()))
        tick(interval)
    moving = [s > thres for s in scores]
    needed = count_needed(len(sampled))
    clip_frames = int(round(CLIP_SECONDS * fps))
    clip_flags = []
    if t >= clip_frames:
        for start in range(0, t - clip_frames + 1, clip_frames):
            idx = [
                k
                for k, a in enumerate(sampled[:-1])
                if start <= a and sampled[k + 1] < start + clip_frames
            ]
            n_sampled = len(idx) + 1
            clip_flags.append(sum(moving[k] for k in idx) >= count_needed(n_sampled))

    # flicker (VBench MAE) and the motion-compensated residual, consecutive frames
    maes, residuals = [], []
    border = 8 if min(h, w) > 32 else 0
    for i in range(t - 1):
        a, b = frames[i].astype(np.float32), frames[i + 1].astype(np.float32)
        maes.append(float(np.abs(a - b).mean()))
        f = flow(grey[i], grey[i + 1], "fast")
        warped = _warp(frames[i + 1], f).astype(np.float32)
        diff = np.abs(warped - a)
        if border:
            diff = diff[border:-border, border:-border]
        residuals.append(float(diff.mean()))
        tick()
    mae = float(np.mean(maes))

    # smoothness proxy: flow midpoint of 2i, 2i+2 against 2i+1
    smooth = []
    for i in range(0, t - 2, 2):
        f = flow(grey[i], grey[i + 2], "fast")
        back = flow(grey[i + 2], grey[i], "fast")
        mid = 0.5 * _warp(frames[i], f, 0.5).astype(np.float32) + 0.5 * _warp(
            frames[i + 2], back, 0.5
        ).astype(np.float32)
        smooth.append((255.0 - float(np.abs(mid - frames[i + 1].astype(np.float32)).mean())) / 255)
        tick(2)

    # per-frame appearance: structure thumbnail, sharpness, saturation, luminance, contrast
    thumbs, sharp, sat, lum, con = [], [], [], [], []
    for f, g in zip(frames, grey):
        small = cv2.resize(g, (32, 18), interpolation=cv2.INTER_AREA).astype(np.float64)
        thumbs.append((small - small.mean()) / (small.std() + 1e-6))
        sharp.append(float(cv2.Laplacian(g, cv2.CV_64F).var()))
        hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
        sat.append(float(hsv[..., 1].mean()))
        lum.append(float(g.mean()))
        con.append(float(g.astype(np.float64).std()))
    index = list(range(t))
    first = np.mean([thumbs[i] for i in range(min(t, int(round(fps))))], axis=0)
    first = (first - first.mean()) / (first.std() + 1e-6)
    content = [float(1.0 - np.mean(x * first)) for x in thumbs]
    base_n = max(1, min(t, int(round(3 * fps))))
    curves = {"content_drift": _per_second(content, index, fps)}
    for name, values in (("sharpness", sharp), ("saturation", sat), ("luminance", lum),
                         ("contrast", con)):  # fmt: skip
        base = float(np.mean(values[:base_n]))
        rel = [v / base if base > 1e-9 else float("nan") for v in values]
        curves[name] = _per_second(rel, index, fps)
    curves["flow_top5"] = _per_second(scores, sampled[:-1], fps)
    curves["flicker_mae"] = _per_second(maes, index[:-1], fps)

    def end(name: str) -> float:
        c = [v for v in curves[name] if not math.isnan(v)]
        return float(np.mean(c[-3:])) if c else float("nan")

    return VideoMetrics(
        frames=t, fps=float(fps), height=h, width=w,
        dynamic=sum(moving) >= needed and bool(scores), moving_pairs=int(sum(moving)),
        pairs_needed=needed, moving_fraction=float(np.mean(moving)) if moving else 0.0,
        dynamic_clips=float(np.mean(clip_flags)) if clip_flags else float("nan"),
        flow_mean=float(np.mean(means)) if means else 0.0,
        flow_top5=float(np.mean(scores)) if scores else 0.0,
        flow_per_frame=(float(np.mean(means)) / interval) if means else 0.0, threshold_px=thres,
        flicker_mae=mae, flicker_score=(255.0 - mae) / 255.0,
        mc_residual=float(np.mean(residuals)),
        smoothness=float(np.mean(smooth)) if smooth else float("nan"),
        content_drift_end=end("content_drift"), sharpness_end=end("sharpness"),
        saturation_end=end("saturation"), luminance_end=end("luminance"),
        contrast_end=end("contrast"), curves=curves,
    )  # fmt: skip


__all__ = [
    "CLIP_SECONDS",
    "VideoMetrics",
    "count_needed",
    "evaluate_frames",
    "flow",
    "motion_threshold",
    "top_fraction_mean",
]
