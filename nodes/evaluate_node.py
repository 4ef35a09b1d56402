"""AdaState Evaluate: offline metrics (dynamics, flicker, drift) of frames or saved videos, as
text and plots on the canvas (adastate_core.evaluate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import CATEGORY, NodeInputError

SLOTS = 4


def _image(png: bytes) -> torch.Tensor:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)[None]


class Evaluate:
    DESCRIPTION = (
        "Measures what the AdaState paper measures, offline and without model weights: "
        "dynamic degree (VBench's recipe with OpenCV optical flow, incl. the fraction of "
        "dynamic 2 s clips), temporal flicker and its motion-compensated residual, a smoothness "
        "proxy, content drift and quality drift (sharpness, saturation, luminance, contrast) "
        "per second. Give it frames (IMAGE) or up to 4 saved videos (e.g. the filename outputs "
        "of Generate Stream nodes) to compare them. Needs opencv-python-headless."
    )
    CATEGORY = f"{CATEGORY}/analysis"
    FUNCTION = "evaluate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE", "IMAGE")
    RETURN_NAMES = ("metrics", "scatter", "curves")
    OUTPUT_TOOLTIPS = (
        "A Markdown table of every number, one row per video.",
        "Consistency against dynamics, one dot per video (the paper's Fig. 5).",
        "Per-second curves: content drift, motion, sharpness, saturation, luminance, contrast.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {
            "images": (
                "IMAGE",
                {"tooltip": "Frames to measure (a video as an IMAGE batch, at least 2 frames)."},
            )
        }
        for i in range(1, SLOTS + 1):
            optional[f"video_{i}"] = (
                "STRING",
                {
                    "forceInput": True,
                    "tooltip": "Path of a saved video, e.g. Generate Stream's filename output.",
                },
            )
        return {
            "required": {
                "fps": (
                    "FLOAT",
                    {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frame rate of the IMAGE frames (saved videos use their own)."},
                ),
                "labels": (
                    "STRING",
                    {"default": "", "tooltip": "Names for the rows, comma-separated (default: file names, 'frames' for the IMAGE)."},
                ),
            },
            "optional": optional,
        }  # fmt: skip

    def evaluate(self, fps, labels="", images=None, **videos):
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise NodeInputError(
                "AdaState Evaluate needs OpenCV: install it into ComfyUI's Python "
                "(python -m pip install opencv-python-headless)"
            ) from None
        from adastate_core.evaluate import evaluate_frames
        from adastate_core.evaluate.report import (
            EvaluateError,
            curves_png,
            markdown_table,
            read_video,
            scatter_png,
        )

        names = [x.strip() for x in labels.split(",")] if labels.strip() else []
        items = []
        if images is not None:
            frames = (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            items.append(("frames", None, frames, float(fps)))
        for i in range(1, SLOTS + 1):
            path = videos.get(f"video_{i}")
            if path:
                try:
                    frames, rate = read_video(path)
                except EvaluateError as err:
                    raise NodeInputError(str(err)) from None
                items.append((Path(path).stem, Path(path), frames, rate))
        if not items:
            raise NodeInputError("connect frames (images) or at least one video path (video_1..4)")
        results = []
        for k, (label, path, frames, rate) in enumerate(items):
            if k < len(names) and names[k]:
                label = names[k]
            try:
                metrics = evaluate_frames(frames, rate)
            except ValueError as err:
                raise NodeInputError(f"{label}: {err}") from None
            results.append((label, path or Path(label), metrics))
        text = markdown_table(results)
        scatter, curves = _image(scatter_png(results)), _image(curves_png(results))
        return {"ui": {"text": [text]}, "result": (text, scatter, curves)}
