"""Decode (a chunk's frames, exact seams in any execution order) and Decode State."""

from __future__ import annotations

from adastate_core.analysis import DecodeMemo, tensor_digest
from adastate_core.pipeline import to_frames
from adastate_core.stream import StreamError

from .common import CATEGORY, CHUNK_INPUT, VAE_INPUT, NodeInputError, streaming_decoder
from .values import DecoderState, NodeChunk

# decoder caches of the latest decoded chunks (content-hash keys; see adastate_core.analysis)
MEMO = DecodeMemo(max_entries=2)

DECODER_TYPE = "ADASTATE_DECODER"


class Decode:
    DESCRIPTION = (
        "Decodes one chunk to frames with the Wan2.1 VAE, continuing the decoder's causal cache "
        "from the chunks before it: concatenated in order, the chunks give exactly the frames "
        "of a one-shot decode (no seams). Chain the `decoder` output into the next chunk's "
        "Decode: each chunk is then decoded once, in order."
    )
    CATEGORY = f"{CATEGORY}/decode"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", DECODER_TYPE)
    RETURN_NAMES = ("images", "decoder")
    OUTPUT_TOOLTIPS = (
        "The chunk's frames: 1 + 4(C-1) for chunk 1, 4C after (C = chunk_frames).",
        "The decoder after this chunk: connect it to the next chunk's Decode Chunk.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"vae": VAE_INPUT, "chunk": CHUNK_INPUT},
            "optional": {
                "decoder": (
                    DECODER_TYPE,
                    {"tooltip": "The `decoder` output of the previous chunk's Decode Chunk (leave empty for the first chunk). Without it every chunk still decodes exactly, but may re-decode the chunks before it."},
                ),
            },
        }  # fmt: skip

    def decode(self, vae, chunk: NodeChunk, decoder: DecoderState | None = None):
        vae_decoder = streaming_decoder(vae)
        if decoder is not None:
            _check_follows(decoder, chunk, MEMO.decoder_key(vae_decoder))
        video, hashes = MEMO.decode(vae_decoder, chunk.history, chunk.chunk.content)
        return (to_frames(video), DecoderState(MEMO.decoder_key(vae_decoder), hashes))


def _check_follows(decoder: DecoderState, chunk: NodeChunk, owner: str) -> None:
    """The connected decoder must have decoded exactly the chunks before `chunk`."""
    k = len(chunk.history)  # chunks before this one
    if not isinstance(decoder, DecoderState):
        raise NodeInputError(
            f"decoder must come from a Decode Chunk node, got {type(decoder).__name__}"
        )
    if decoder.chunks == k and decoder.decoder == owner:
        if decoder.hashes == tuple(tensor_digest(t) for t in chunk.history):
            return
    if decoder.chunks != k:
        raise NodeInputError(
            f"the decoder connected to Decode Chunk has decoded {decoder.chunks} chunk(s), but "
            f"this is chunk {k + 1}: connect the `decoder` output of the Decode Chunk of chunk "
            f"{k}" + (" (or nothing: this is the first chunk)" if k == 0 else "")
        )
    if decoder.decoder != owner:
        raise NodeInputError(
            "the decoder connected to Decode Chunk was made with another VAE: connect the same "
            "VAE to every Decode Chunk of a video"
        )
    raise NodeInputError(
        f"the decoder connected to Decode Chunk comes from another stream (its chunks differ "
        f"from the {k} chunk(s) before this one): connect the Decode Chunk of the previous "
        "chunk of this stream"
    )


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
                else f"the state is denoised from the first steady-state chunk (chunk {first + 1}) on"
            )
            raise StreamError(
                f"chunk {chunk.chunk.index + 1} has no hidden state to decode: {why}. Use the "
                "adaptive policy and a later chunk"
            )
        decoder = streaming_decoder(vae)
        return (to_frames(decoder.decode(state.to(decoder.device))),)
