"""The granular stream: Init Cache -> (Denoise Chunk -> Update State) per chunk; and the
Prompt Schedule for the whole-stream node."""

from __future__ import annotations

import torch

from adastate_core.prompts import parse_schedule
from adastate_core.stream import (
    denoise_chunk,
    init_stream,
    prepare_conditioning,
    set_prompt,
    update_state,
)

from . import bridge
from .common import (
    CATEGORY,
    CHUNK_INPUT,
    MODEL_INPUT,
    POSITIVE_INPUT,
    STREAM_INPUT,
    NodeInputError,
    conditioning_tensor,
    raw_latent,
    size_inputs,
    stream_config,
    stream_inputs,
    streaming_encoder,
    use_model,
)
from .values import NodeChunk, NodeStream, PromptList, chunk_to, state_to


class InitCache:
    DESCRIPTION = (
        "Starts a new stream: an empty K/V cache for the prompt, the video size and the anchor "
        "policy. Chain Denoise Chunk -> Update State once per chunk after it."
    )
    CATEGORY = f"{CATEGORY}/stream"
    FUNCTION = "init"
    RETURN_TYPES = ("ADASTATE_STREAM",)
    RETURN_NAMES = ("stream",)
    OUTPUT_TOOLTIPS = ("The new stream, before chunk 0.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "positive": POSITIVE_INPUT,
                **size_inputs(),
                **stream_inputs(),
            }
        }

    def init(self, model, positive, width, height, anchor_policy, chunk_frames, state_frames,
             window_frames, anchor_frames, steps, shift, seed):  # fmt: skip
        config = stream_config(
            width, height, anchor_policy, chunk_frames, state_frames, window_frames,
            anchor_frames, steps, shift, seed,
        )  # fmt: skip
        dit = use_model(model, config)
        state = init_stream(dit, conditioning_tensor(positive), config)
        return (NodeStream(state_to(state, bridge.offload_device()), ()),)


class DenoiseChunk:
    DESCRIPTION = (
        "Denoises the next chunk (paper Eq. 2): the live content and the adaptive state are "
        "denoised jointly in the cached window. The stream is not advanced: feed the chunk to "
        "Update State. Connect `positive` to switch the prompt from this chunk on."
    )
    CATEGORY = f"{CATEGORY}/stream"
    FUNCTION = "denoise"
    RETURN_TYPES = ("ADASTATE_CHUNK", "LATENT")
    RETURN_NAMES = ("chunk", "latent")
    OUTPUT_TOOLTIPS = (
        "The denoised chunk (content + hidden state) with the latents of the chunks before it.",
        "The chunk's content latent in raw Wan VAE space (decodes with VAE Decode, with seams).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"model": MODEL_INPUT, "stream": STREAM_INPUT},
            "optional": {
                "positive": (
                    "CONDITIONING",
                    {"tooltip": "Optional: switch to this prompt from this chunk on (the same prompt as the stream's changes nothing)."},
                ),
                "recache": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "On a prompt switch, recompute the cached K/V under the new prompt (LongLive's KV re-cache): a cleaner switch, one extra DiT pass."},
                ),
            },
        }  # fmt: skip

    def denoise(self, model, stream: NodeStream, positive=None, recache=False):
        state = stream.state
        dit = use_model(model, state.config)
        state = state_to(state, dit.device)
        switched = None
        if positive is not None:
            want = prepare_conditioning(dit, conditioning_tensor(positive))
            if want.shape != state.conditioning.shape or not torch.equal(want, state.conditioning):
                state = switched = set_prompt(dit, state, want, recache=bool(recache))
        steps = len(state.config.schedule.steps)
        bar = bridge.progress(steps)

        def on_step(step: int, total: int) -> None:
            bar.update_absolute(step, total)
            bridge.check_interrupted()

        chunk = chunk_to(denoise_chunk(dit, state, on_step=on_step), bridge.offload_device())
        node_chunk = NodeChunk(
            chunk,
            stream.history,
            state.config,
            None if switched is None else state_to(switched, bridge.offload_device()),
            None if switched is None else stream.state.token,
        )
        return (node_chunk, {"samples": raw_latent(chunk.content)})


class UpdateState:
    DESCRIPTION = (
        "Writes a denoised chunk into the cache (paper Eq. 3): one DiT pass at t = 0; the "
        "content joins the window (the oldest frames are evicted) and, with the adaptive "
        "policy, the state overwrites the anchor slot. Returns the stream before the next chunk."
    )
    CATEGORY = f"{CATEGORY}/stream"
    FUNCTION = "update"
    RETURN_TYPES = ("ADASTATE_STREAM",)
    RETURN_NAMES = ("stream",)
    OUTPUT_TOOLTIPS = ("The stream after this chunk, ready for the next Denoise Chunk.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "stream": (
                    "ADASTATE_STREAM",
                    {"tooltip": "The stream the chunk was denoised from (the same one fed to Denoise Chunk)."},
                ),
                "chunk": CHUNK_INPUT,
            }
        }  # fmt: skip

    def update(self, model, stream: NodeStream, chunk: NodeChunk):
        base = stream.state
        if chunk.switched is not None and chunk.parent == base.token:
            base = chunk.switched  # the chunk switched the prompt: continue under the new one
        dit = use_model(model, base.config)
        new = update_state(dit, state_to(base, dit.device), chunk_to(chunk.chunk, dit.device))
        history = (*stream.history, chunk.chunk.content.cpu())
        return (NodeStream(state_to(new, bridge.offload_device()), history),)


class PromptScheduleNode:
    DESCRIPTION = (
        "Timed prompt switches for Generate Stream: one `seconds: prompt` per line, e.g. "
        "'10: the fox starts to run'. Generate's `positive` prompt plays until the first "
        "switch (a line at 0 s replaces it). Prompts switch at chunk boundaries."
    )
    CATEGORY = f"{CATEGORY}/prompts"
    FUNCTION = "schedule"
    RETURN_TYPES = ("ADASTATE_PROMPTS",)
    RETURN_NAMES = ("prompts",)
    OUTPUT_TOOLTIPS = ("The encoded prompts with their start times, for Generate Stream.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (
                    "CLIP",
                    {"tooltip": "The umT5-XXL text encoder (CLIPLoader with type 'wan')."},
                ),
                "text": (
                    "STRING",
                    {"multiline": True, "default": "5: the fox starts to run\n10: the fox leaps over a frozen stream", "tooltip": "One 'seconds: prompt' per line; '#' starts a comment. Generate's positive prompt plays from 0 s until the first line's time; a line at 0 s replaces it."},
                ),
                "recache": (
                    "BOOLEAN",
                    {"default": False, "tooltip": "On each switch, recompute the cached K/V under the new prompt (LongLive's KV re-cache)."},
                ),
            }
        }  # fmt: skip

    def schedule(self, clip, text: str, recache: bool):
        entries = tuple(
            (p.seconds, bridge.encode_text(clip, p.text))
            for p in parse_schedule(text, from_zero=False)
        )
        return (PromptList(entries, bool(recache)),)


class PrimeStream:
    DESCRIPTION = (
        "Starts a new stream from your frames (image-to-video, extending a clip): the images "
        "are encoded with the VAE and written into the stream's cache as if the stream had "
        "generated them, so the next chunk continues them. Connect it between Init Cache and "
        "Denoise Chunk or Generate Stream. Frames must have the stream's size (resize with "
        "Upscale Image, crop center); of a batch the last 1+4k frames are used. Frames that do "
        "not fill a whole chunk (e.g. one image) become the first frames of the next chunk, "
        "kept exactly; a prefix longer than the window leaves its last window frames and the "
        "anchor in the cache."
    )
    CATEGORY = f"{CATEGORY}/stream"
    FUNCTION = "prime"
    RETURN_TYPES = ("ADASTATE_STREAM",)
    RETURN_NAMES = ("stream",)
    OUTPUT_TOOLTIPS = ("The stream after your frames, ready for its next chunk.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "stream": (
                    "ADASTATE_STREAM",
                    {"tooltip": "A new stream from Init Cache (its prompt, size, seed and anchor policy)."},
                ),
                "vae": (
                    "VAE",
                    {"tooltip": "The Wan2.1 VAE (wan_2.1_vae.safetensors); its encoder turns the frames into latents."},
                ),
                "images": (
                    "IMAGE",
                    {"tooltip": "One image, or the frames of a clip (e.g. Load Video's), at the stream's width x height."},
                ),
                "output": (
                    ["original", "decoded"],
                    {"default": "original", "tooltip": "What Generate Stream writes first: your original frames, or them encoded and decoded by the VAE."},
                ),
            }
        }  # fmt: skip

    def prime(self, model, stream: NodeStream, vae, images, output="original"):
        from adastate_core.prefix import check_frames, encode_frames
        from adastate_core.stream import prime

        state = stream.state
        cfg = state.config
        if state.chunk_index != 0 or stream.history:
            raise NodeInputError(
                f"Prime Stream needs a new stream from Init Cache (this one is at chunk "
                f"{state.chunk_index})"
            )
        try:
            frames = check_frames(images, cfg.height, cfg.width)
        except ValueError as err:
            raise NodeInputError(str(err)) from None
        encoder = streaming_encoder(vae)
        latents = encode_frames(encoder, frames, on_latent=lambda *_: bridge.check_interrupted())
        dit = use_model(model, cfg)
        primed = prime(dit, state_to(state, dit.device), latents.to(dit.device))
        whole = primed.chunk_index
        history = tuple(
            latents[:, :, k * cfg.chunk : (k + 1) * cfg.chunk].float().cpu() for k in range(whole)
        )
        keep = frames.cpu() if output == "original" else None
        return (NodeStream(state_to(primed, bridge.offload_device()), history, keep),)
