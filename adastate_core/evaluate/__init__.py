"""Offline evaluation of streamed videos: dynamics, flicker, smoothness, content and quality
drift (metrics.py), reports over many videos (report.py), and anchor comparisons (compare.py)."""

from .metrics import VideoMetrics, evaluate_frames, motion_threshold

__all__ = ["VideoMetrics", "evaluate_frames", "motion_threshold"]
