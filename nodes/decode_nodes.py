"""Decode (a chunk's frames, exact seams in any execution order) and Decode State."""

from __future__ import annotations

from adastate_core.analysis import DecodeMemo
from adastate_core.pipeline import to_frames
from adastate_core.stream import StreamError

from .common import CATEGORY, CHUNK_INPUT, VAE_INPUT, streaming_decoder
from .values import NodeChunk

# decoder caches of the latest decoded prefixes (content-hash keys; see adastate_core.analysis)
MEMO = DecodeMemo(max_entries=2)


class Decode:
    DESCRIPTION = (
        "Decodes one chunk to frames with the Wan2.1 VAE, continuing the decoder's causal cache "
        "from the chunks before it: concatenated in order, the chunks give exactly the frames "
        "of a one-shot decode (no seams), whatever order ComfyUI runs the Decode nodes in."
    )
    CATEGORY = f"{CATEGORY}/decode"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The chunk's frames: 1 + 4(C-1) for chunk 0, 4C after (C = chunk_frames).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": VAE_INPUT, "chunk": CHUNK_INPUT}}

    def decode(self, vae, chunk: NodeChunk):
        decoder = streaming_decoder(vae)
        video = MEMO.decode(decoder, chunk.history, chunk.chunk.content)
        return (to_frames(video),)


class DecodeState:
    DESCRIPTION = (
        "Decodes the chunk's hidden adaptive-state latent as if it were a video, to inspect "
        "what the state carries. The state is never part of the video."
    )
    CATEGORY = f"{CATEGORY}/analysis"
    FUNCTION = "decode_state"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The hidden state latent decoded on its own: 1 + 4(S-1) frames.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae": VAE_INPUT, "chunk": CHUNK_INPUT}}

    def decode_state(self, vae, chunk: NodeChunk):
        state = chunk.chunk.state
        if state is None:
            cfg = chunk.config
            first = next(k for k in range(1, cfg.window + 2) if cfg.steady(k))
            why = (
                f"the {cfg.policy!r} policy has no adaptive state"
                if not cfg.uses_state
                else f"the state is denoised from the first steady-state chunk ({first}) on"
            )
            raise StreamError(
                f"chunk {chunk.chunk.index} has no hidden state to decode: {why}. Use the "
                "adaptive policy and a later chunk"
            )
        decoder = streaming_decoder(vae)
        return (to_frames(decoder.decode(state.to(decoder.device))),)
