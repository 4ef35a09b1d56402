"""Generate Stream (AdaState): the whole stream in one node, streamed to a video file."""

from __future__ import annotations

import threading

import torch

from adastate_core.pipeline import ChunkReport, generate
from adastate_core.stream import FPS, init_stream
from adastate_core.vae import estimate_cache_bytes

from . import bridge
from .common import (
    CATEGORY,
    CRF_INPUT,
    FORMAT_INPUT,
    MODEL_INPUT,
    POSITIVE_INPUT,
    VAE_INPUT,
    NodeInputError,
    chunk_count,
    create_video,
    discard_if_empty,
    file_metadata,
    pil_image,
    preview_indices,
    prompt_schedule,
    size_inputs,
    stream_config,
    stream_inputs,
    streaming_decoder,
    use_model,
    video_ui,
    workflow_id,
)
from .values import NodeStream, state_to

EVENT = "adastate.chunk"


def continue_from(start, decoder, writer) -> tuple:
    """For a connected stream: the decoder cache after its chunks (decoded from its history,
    so the first new frames join without a seam), written to the file first as the given
    original frames (Prime Stream) or as the decoded history; -> (decoder cache, frames
    written, frames of the first new chunk not to write again)."""
    if start is None:
        return None, 0, 0
    from adastate_core.io.background import frames_uint8
    from adastate_core.vae import video_frames

    cache, video = None, None
    if start.history:
        latents = torch.cat(list(start.history), dim=2).to(decoder.device)
        video, cache = decoder.decode_chunk(latents)
    lead = start.state.lead
    if start.prefix_frames is not None:
        writer.write(start.prefix_frames)
        r = 0 if lead is None else lead.shape[2]
        return cache, start.prefix_frames.shape[0], video_frames(r, first=not start.history)
    if video is not None:
        frames = frames_uint8(video).cpu()
        writer.write(frames)
        return cache, frames.shape[0], 0
    return cache, 0, 0


class Generate:
    DESCRIPTION = (
        "Generates a whole stream: denoise, update, decode and write chunk by chunk to a video "
        "file in the output folder (RAM flat for any length). Shows a preview of each chunk, "
        "and Cancel keeps a playable file with every finished chunk. Returns a preview of at "
        "most preview_frames frames."
    )
    CATEGORY = f"{CATEGORY}"
    FUNCTION = "generate"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING", "VIDEO")
    RETURN_NAMES = ("preview", "filename", "video")
    OUTPUT_TOOLTIPS = (
        "At most preview_frames frames of the video, evenly spaced (the full video is the file).",
        "Full path of the video file.",
        "The saved video as a native VIDEO (ComfyUI versions that have the VIDEO type).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        size = size_inputs()
        stream = stream_inputs()
        return {
            "required": {
                "model": MODEL_INPUT,
                "positive": POSITIVE_INPUT,
                "vae": VAE_INPUT,
                **size,
                "seconds": (
                    "FLOAT",
                    {"default": 5.0, "min": 0.1, "max": 36000.0, "step": 0.5, "tooltip": "Length of the video in seconds at 16 fps (rounded up to whole chunks)."},
                ),
                **stream,
                "format": FORMAT_INPUT,
                "crf": CRF_INPUT,
                "filename_prefix": (
                    "STRING",
                    {"default": "AdaState", "tooltip": "File name prefix in the output folder; may include a sub-folder (no '..')."},
                ),
                "preview_frames": (
                    "INT",
                    {"default": 81, "min": 0, "max": 10000, "tooltip": "Frames returned as IMAGE, evenly spaced over the video (bounded, so long runs fit in RAM)."},
                ),
            },
            "optional": {
                "prompts": (
                    "ADASTATE_PROMPTS",
                    {"tooltip": "Optional prompt switches from Prompt Schedule: `positive` plays until the first switch (a schedule line at 0 s replaces it)."},
                ),
                "chunks": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1000000, "tooltip": "If above 0: generate exactly this many chunks (3 latent frames = 12 video frames each) instead of `seconds`."},
                ),
                "stream": (
                    "ADASTATE_STREAM",
                    {"tooltip": "Optional: continue this stream (e.g. from Prime Stream: your image or clip first) instead of starting one; its size and stream settings are used (the widgets' are not). seconds / chunks count the whole video, the given frames included."},
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO", "unique_id": "UNIQUE_ID"},
        }  # fmt: skip

    def generate(self, model, positive, vae, width, height, seconds, anchor_policy, chunk_frames,
                 state_frames, window_frames, anchor_frames, steps, shift, seed, format, crf,
                 filename_prefix, preview_frames, prompts=None, chunks=0, stream=None,
                 prompt=None, extra_pnginfo=None, unique_id=None):  # fmt: skip
        start = stream
        if start is not None:
            if not isinstance(start, NodeStream):
                raise NodeInputError(
                    "stream must come from Init Cache, Prime Stream or Update State"
                )
            config = start.state.config
            width, height = config.width, config.height
        else:
            config = stream_config(
                width, height, anchor_policy, chunk_frames, state_frames, window_frames,
                anchor_frames, steps, shift, seed,
            )  # fmt: skip
        total = int(chunks) if chunks and chunks > 0 else chunk_count(seconds, config)
        if start is not None and total <= start.state.chunk_index:
            raise NodeInputError(
                f"the connected stream already holds {start.state.chunk_index} chunks "
                f"({config.frames_after(start.state.chunk_index)} frames); ask for a longer "
                "video (seconds / chunks count the whole video)"
            )
        schedule = prompt_schedule(config, positive, prompts)
        bridge.save_path(filename_prefix, bridge.output_directory(), width, height)  # checks it
        decoder = streaming_decoder(vae)
        vae_cache = estimate_cache_bytes(height, width, decoder.dtype, dim=decoder.dim)
        dit = use_model(model, config, extra=vae_cache)
        if start is None:
            stream = init_stream(dit, schedule.at(0), config)
        else:
            stream = state_to(start.state, dit.device)

        # progress units per chunk: the denoising steps, then the latent frames decoded
        per_chunk = len(config.schedule.steps) + config.chunk
        n_steps = len(config.schedule.steps)
        bar = bridge.progress(total * per_chunk)
        keep = preview_indices(config.frames_after(total), preview_frames)
        kept: list[torch.Tensor] = []
        where = {
            "node": unique_id,
            "prompt_id": bridge.executing_prompt_id(),
            "workflow_id": workflow_id(extra_pnginfo),
        }

        shown = [0]
        lock = threading.Lock()

        def advance(value: int) -> None:
            # on_chunk runs in the writer thread, behind the next chunk's steps: the bar
            # only ever moves forward
            with lock:
                if value > shown[0]:
                    shown[0] = value
                    bar.update_absolute(value, total * per_chunk)

        def on_step(chunk: int, step: int, steps_: int) -> None:
            advance(chunk * per_chunk + step)
            bridge.check_interrupted()

        def on_decode(chunk: int, frame: int, frames: int) -> None:
            bridge.check_interrupted()  # Cancel during a long decode stops it at once
            if frame < frames:
                advance(chunk * per_chunk + n_steps + frame)

        def on_chunk(report: ChunkReport) -> None:
            start = report.frames_written - report.frames.shape[0]
            kept.extend(
                report.frames[i - start].clone()
                for i in range(start, report.frames_written)
                if i in keep
            )
            advance((report.index + 1) * per_chunk)
            # the chunk's last frame, shown live on the node by js/adastate.js. Not sent as a
            # progress preview: ComfyUI's frontend prefers a node's progress previews over its
            # outputs, so the finished video would never replace the last preview.
            image = pil_image(report.frames[-1])
            image.thumbnail((bridge.PREVIEW_SIZE, bridge.PREVIEW_SIZE))
            shown = bridge.save_temp_preview(image, f"adastate_preview_{unique_id or 0}.jpg")
            bridge.send_event(
                EVENT,
                {
                    **where,
                    "chunk": report.index + 1,  # 1-based, as shown to the user
                    "total": total,
                    "frames": report.frames_written,
                    "filename": path.name,
                    "subfolder": subfolder,
                    "type": "output",
                    "preview": shown,
                },
            )

        metadata = file_metadata(
            prompt,
            extra_pnginfo,
            generator="adastate",
            seed=str(seed),
            anchor=anchor_policy,
            settings=config.to_json(),
        )
        writer, path, subfolder = create_video(
            filename_prefix, bridge.output_directory(), width, height, format,
            fps=FPS, crf=crf, metadata=metadata,
        )  # fmt: skip
        try:
            with writer:
                prior = continue_from(start, decoder, writer)
                generate(
                    dit,
                    decoder,
                    stream,
                    writer,
                    total_chunks=total,
                    prompts=schedule,
                    on_chunk=on_chunk,
                    on_step=on_step,
                    on_decode=on_decode,
                    vae_cache=prior[0],
                    frames_written=prior[1],
                    skip_frames=prior[2],
                )
        except BaseException:
            discard_if_empty(writer)  # keeps a file that holds finished chunks
            raise
        finally:
            del stream
            bridge.soft_empty_cache()
        if kept:
            images = torch.stack(kept)
        else:
            images = torch.zeros(1, height, width, 3)
        return {
            "ui": video_ui(path, subfolder),
            "result": (images, str(path), bridge.video_output(path)),
        }
