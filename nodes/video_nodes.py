"""Video Combine (AdaState): IMAGE frames -> a video file in the output (or temp) folder."""

from __future__ import annotations

from . import bridge
from .common import (
    CATEGORY,
    CRF_INPUT,
    FORMAT_INPUT,
    create_video,
    discard_if_empty,
    file_metadata,
    video_ui,
)


class VideoCombine:
    DESCRIPTION = (
        "Saves IMAGE frames as a video (mp4 / webm / animated webp / gif) with the prompt and "
        "workflow embedded, and shows it in the node."
    )
    CATEGORY = f"{CATEGORY}/video"
    FUNCTION = "combine"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "VIDEO")
    RETURN_NAMES = ("filename", "video")
    OUTPUT_TOOLTIPS = (
        "Full path of the saved video file.",
        "The saved video as a native VIDEO (ComfyUI versions that have the VIDEO type).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The frames to save, in order."}),
                "frame_rate": (
                    "FLOAT",
                    {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": "Frames per second (Wan2.1 makes 16 fps video)."},
                ),
                "format": FORMAT_INPUT,
                "crf": CRF_INPUT,
                "filename_prefix": (
                    "STRING",
                    {"default": "AdaState", "tooltip": "File name prefix; may include a sub-folder of the output folder (no '..')."},
                ),
                "save_output": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Save to the output folder (on) or only to the temp folder for preview (off)."},
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }  # fmt: skip

    def combine(self, images, frame_rate, format, crf, filename_prefix, save_output,
                prompt=None, extra_pnginfo=None):  # fmt: skip
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be IMAGE frames [N, H, W, 3], got {list(images.shape)}")
        folder = bridge.output_directory() if save_output else bridge.temp_directory()
        height, width = int(images.shape[1]), int(images.shape[2])
        metadata = file_metadata(prompt, extra_pnginfo, generator="adastate")
        writer, path, subfolder = create_video(
            filename_prefix, folder, width, height, format,
            fps=frame_rate, crf=crf, metadata=metadata,
        )  # fmt: skip
        try:
            with writer:
                writer.write(images)
        except BaseException:
            discard_if_empty(writer)
            raise
        ui = video_ui(path, subfolder, "output" if save_output else "temp")
        return {"ui": ui, "result": (str(path), bridge.video_output(path))}
