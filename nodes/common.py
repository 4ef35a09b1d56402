"""Shared pieces of the node classes: input declarations used by several nodes, ComfyUI value
conversions and the model / decoder plumbing. No algorithm lives here."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adastate_core.errors import AdaStateError, CheckpointError
from adastate_core.memory import kv_and_activation_bytes
from adastate_core.model import CausalWanDiT
from adastate_core.stream import POLICIES, PromptSchedule, StreamConfig, StreamError
from adastate_core.stream.config import parse_steps
from adastate_core.vae import LATENT_MEAN, LATENT_STD, WanVAEDecoder, load_vae

from . import bridge
from .values import AdaStateModel, PromptList

CATEGORY = "AdaState"
VIDEO_FORMATS = ["mp4", "webm", "webp", "gif"]
MAX_SIZE = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF


class NodeInputError(AdaStateError, ValueError):
    """A node input that cannot be used (the message says what to connect instead)."""


# -- input declarations --------------------------------------------------------------------------

MODEL_INPUT = ("ADASTATE_MODEL", {"tooltip": "The causal DiT from Load AdaState Model."})
STREAM_INPUT = (
    "ADASTATE_STREAM",
    {"tooltip": "The stream state (K/V cache, anchor slot, prompt) before the next chunk."},
)
CHUNK_INPUT = ("ADASTATE_CHUNK", {"tooltip": "A denoised chunk from Denoise Chunk."})
VAE_INPUT = (
    "VAE",
    {"tooltip": "The Wan2.1 VAE (wan_2.1_vae.safetensors from Load VAE); not the Wan2.2 one."},
)
POSITIVE_INPUT = (
    "CONDITIONING",
    {"tooltip": "The prompt: CLIPTextEncode with a CLIPLoader of type 'wan' (umT5-XXL)."},
)


def size_inputs() -> dict[str, tuple]:
    return {
        "width": (
            "INT",
            {"default": 832, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Video width in pixels (multiple of 16)."},
        ),
        "height": (
            "INT",
            {"default": 480, "min": 16, "max": MAX_SIZE, "step": 16, "tooltip": "Video height in pixels (multiple of 16)."},
        ),
    }  # fmt: skip


FORMAT_INPUT = (
    VIDEO_FORMATS,
    {"default": "mp4", "tooltip": "File format: mp4 (H.264), webm (VP9), animated webp or gif."},
)
CRF_INPUT = (
    "INT",
    {"default": 19, "min": 0, "max": 51, "tooltip": "Quality for mp4 / webm: lower is better and larger (19 is visually lossless)."},
)  # fmt: skip


def stream_inputs() -> dict[str, tuple]:
    """The stream settings shared by Init Cache and Generate Stream, in widget order."""
    return {
        "anchor_policy": (
            list(POLICIES),
            {"default": "adaptive", "tooltip": "What occupies the anchor slot at cache position 0: adaptive (AdaState's denoised state), static (first-frame sink), ema (Reward Forcing), none (rolling window), adaptive+sink."},
        ),
        "chunk_frames": (
            "INT",
            {"default": 3, "min": 1, "max": 64, "tooltip": "Latent frames generated per chunk (C); 4 video frames each."},
        ),
        "state_frames": (
            "INT",
            {"default": 1, "min": 1, "max": 64, "tooltip": "Latent frames of the adaptive state (S); adaptive policies only."},
        ),
        "window_frames": (
            "INT",
            {"default": 3, "min": 0, "max": 256, "tooltip": "Cached content frames the chunk attends to (W); older frames are evicted."},
        ),
        "anchor_frames": (
            "INT",
            {"default": 1, "min": 1, "max": 64, "tooltip": "Frames of a static / EMA sink (A); static, ema and adaptive+sink only."},
        ),
        "steps": (
            "STRING",
            {"default": "1000,750,500,250", "tooltip": "Denoising timesteps, comma-separated, highest first (the few-step schedule of the checkpoint)."},
        ),
        "shift": (
            "FLOAT",
            {"default": 5.0, "min": 0.01, "max": 100.0, "step": 0.1, "tooltip": "Timestep shift of the sigma schedule (5.0 for Wan2.1 1.3B)."},
        ),
        "seed": (
            "INT",
            {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True, "tooltip": "Random seed; the same seed gives the same video in every node graph and the CLI."},
        ),
    }  # fmt: skip


# -- conversions ---------------------------------------------------------------------------------


def stream_config(
    width: int,
    height: int,
    anchor_policy: str,
    chunk_frames: int,
    state_frames: int,
    window_frames: int,
    anchor_frames: int,
    steps: str,
    shift: float,
    seed: int,
) -> StreamConfig:
    return StreamConfig(
        height=height,
        width=width,
        policy=anchor_policy,
        chunk=chunk_frames,
        state=state_frames,
        window=window_frames,
        anchor_frames=anchor_frames,
        steps=parse_steps(steps),
        shift=shift,
        seed=seed,
    )


def conditioning_tensor(conditioning: Any, name: str = "positive") -> Tensor:
    """The text rows [1, L, 4096] of a ComfyUI CONDITIONING (its first entry)."""
    try:
        tensor = conditioning[0][0]
    except (TypeError, IndexError, KeyError):
        tensor = None
    if not isinstance(tensor, Tensor):
        raise NodeInputError(
            f"{name} must be CONDITIONING from CLIPTextEncode (a list of [tensor, dict]), got "
            f"{type(conditioning).__name__}"
        )
    return tensor


def prompt_schedule(
    config: StreamConfig, positive: Any, prompts: PromptList | None
) -> PromptSchedule:
    """The prompt of the whole stream: `positive` from 0 s, switching at the times of
    `prompts` if connected (a schedule line at 0 s replaces `positive`)."""
    if prompts is None:
        return PromptSchedule.single(conditioning_tensor(positive))
    timed = [
        (sec, conditioning_tensor(c, "a prompt of the schedule")) for sec, c in prompts.entries
    ]
    if not timed or timed[0][0] > 0:
        timed = [(0.0, conditioning_tensor(positive)), *timed]
    return PromptSchedule.from_seconds(config, timed, recache=prompts.recache)


def raw_latent(z: Tensor) -> Tensor:
    """DiT-space latent -> ComfyUI LATENT samples (raw Wan VAE space), a new tensor."""
    mean = torch.tensor(LATENT_MEAN, device=z.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(LATENT_STD, device=z.device).view(1, -1, 1, 1, 1)
    return z.float() * std + mean


def preview_indices(frames: int, wanted: int) -> set[int]:
    """At most `wanted` frame indices, evenly spaced over `frames` (first and last included)."""
    if wanted <= 0 or frames <= 0:
        return set()
    if wanted >= frames:
        return set(range(frames))
    return {int(i) for i in np.linspace(0, frames - 1, wanted).round()}


def pil_image(frame: Tensor):
    """IMAGE frame [H, W, 3] float 0..1 -> PIL image."""
    from PIL import Image

    array = (frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array)


def create_video(
    prefix: str, folder: str, width: int, height: int, format: str, **writer_args
) -> tuple:
    """A new numbered video file for `prefix` in `folder` (ComfyUI naming `<prefix>_00001_.mp4`,
    the counter past every earlier file), opened for writing -> (writer, path, subfolder).
    The file is created exclusively: an existing file (or link) is never overwritten or
    followed; if one appears under the chosen name, the next number is taken."""
    from pathlib import Path

    from adastate_core.io import OutputExistsError, open_writer

    full_folder, filename, counter, subfolder = bridge.save_path(prefix, folder, width, height)
    for _ in range(100_000):
        path = Path(full_folder) / bridge.numbered_name(filename, counter, format)
        try:
            writer = open_writer(path, format=format, exclusive=True, **writer_args)
        except OutputExistsError:
            counter += 1
            continue
        return writer, path, subfolder
    raise NodeInputError(
        f"no free file name for {prefix!r} in {full_folder}: choose another filename_prefix"
    )


def discard_if_empty(writer) -> None:
    """After a failure: close `writer` and delete its file if no frame reached it (the node
    created it for this run; a file with frames is kept: it plays)."""
    import contextlib

    with contextlib.suppress(Exception):
        writer.close()
    if writer.frames_written == 0:
        with contextlib.suppress(OSError):
            writer.path.unlink()


def workflow_id(extra_pnginfo: Any) -> str | None:
    """The id of the frontend workflow that queued the prompt (None from the API)."""
    if isinstance(extra_pnginfo, dict):
        workflow = extra_pnginfo.get("workflow")
        if isinstance(workflow, dict) and workflow.get("id") is not None:
            return str(workflow["id"])
    return None


def video_ui(path, subfolder: str, kind: str = "output") -> dict:
    """The node's UI output: ComfyUI's frontend plays an `animated` mp4/webm in the node and
    shows animated webp as an image; a gif is shown as an image (not `animated`, which
    would make the frontend try a video player that cannot play gif)."""
    animated = path.suffix.lower() != ".gif"
    return {
        "images": [{"filename": path.name, "subfolder": subfolder, "type": kind}],
        "animated": (animated,),
    }


def file_metadata(prompt: Any, extra_pnginfo: Any, **more: str) -> dict[str, str]:
    """Metadata strings for the video file: the ComfyUI prompt and workflow, and `more`."""
    import json

    meta = dict(more)
    if prompt is not None:
        meta["prompt"] = json.dumps(prompt)
    if isinstance(extra_pnginfo, dict):
        for key, value in extra_pnginfo.items():
            meta[key] = json.dumps(value)
    return meta


# -- model and decoder ---------------------------------------------------------------------------


def memory_estimate(dit: CausalWanDiT, config: StreamConfig, extra: int = 0) -> int:
    """Bytes to keep free beside the DiT: window K/V and live activations
    (`adastate_core.memory`) plus `extra`. ComfyUI only uses it to offload other models."""
    return kv_and_activation_bytes(dit.config, config, dit.compute_dtype) + int(extra)


def use_model(model: AdaStateModel, config: StreamConfig | None = None, extra: int = 0):
    """Have ComfyUI load the DiT onto the compute device; -> the DiT."""
    if not isinstance(model, AdaStateModel):
        raise NodeInputError(
            f"model must come from Load AdaState Model or AdaState from MODEL, got "
            f"{type(model).__name__}"
        )
    need = extra if config is None else memory_estimate(model.dit, config, extra)
    bridge.load_model(model, memory_required=need)
    return model.dit


_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _native_vae_part(vae: Any, cache: weakref.WeakKeyDictionary, load):
    """Our streaming model (`load(state_dict, device=...)`) built from a native VAE's weights,
    cached per VAE and device."""
    device = bridge.torch_device()
    try:
        part = cache.get(vae)
    except TypeError:  # not weak-referenceable: build each time
        part = None
    if part is not None and part.device == device:
        return part
    try:
        part = load(bridge.vae_state_dict(vae), device=device)
    except CheckpointError as err:
        raise CheckpointError(
            str(err).replace("the given state dict", "the connected VAE")
        ) from None
    try:
        cache[vae] = part
    except TypeError:
        pass
    return part


def streaming_decoder(vae: Any) -> WanVAEDecoder:
    """Our streaming Wan2.1 decoder built from a native VAE's weights (cached per VAE)."""
    return _native_vae_part(vae, _DECODERS, load_vae)


_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def streaming_encoder(vae: Any):
    """Our streaming Wan2.1 VAE encoder built from a native VAE's weights (cached per VAE)."""
    from adastate_core.vae import load_vae_encoder

    return _native_vae_part(vae, _ENCODERS, load_vae_encoder)


def chunk_count(seconds: float, config: StreamConfig) -> int:
    if seconds <= 0:
        raise StreamError(f"seconds must be > 0, got {seconds}")
    return config.chunks_for_seconds(seconds)
