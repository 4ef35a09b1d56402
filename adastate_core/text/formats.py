"""Text-encoder checkpoint formats: recognising a file and mapping it to transformers' names.

Everything here is data plus small pure functions over key names and shapes (REFERENCE.md §4).
The target naming is transformers' `UMT5EncoderModel` (which is also what ComfyUI's
`umt5_xxl_*.safetensors` files use):

    shared.weight                                                   [vocab, d_model]
    encoder.block.N.layer.0.layer_norm.weight                       [d_model]
    encoder.block.N.layer.0.SelfAttention.{q,k,v}.weight            [heads*d_kv, d_model]
    encoder.block.N.layer.0.SelfAttention.o.weight                  [d_model, heads*d_kv]
    encoder.block.N.layer.0.SelfAttention.relative_attention_bias.weight   [buckets, heads]
    encoder.block.N.layer.1.layer_norm.weight                       [d_model]
    encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1}.weight       [d_ff, d_model]
    encoder.block.N.layer.1.DenseReluDense.wo.weight                [d_model, d_ff]
    encoder.final_layer_norm.weight                                 [d_model]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..model.formats import _any, _starts  # the DiT loader's key-name predicates

# The files a user should load (named in every error message).
UMT5_FILES = (
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors or umt5_xxl_fp16.safetensors (ComfyUI "
    "models/text_encoders), or the official models_t5_umt5-xxl-enc-bf16.pth with its "
    "google/umt5-xxl tokenizer folder"
)

# Key of the SentencePiece model bytes (uint8 tensor) inside ComfyUI's text-encoder files.
SPIECE_KEY = "spiece_model"

# Official Wan `wan/modules/t5.py` (T5Encoder, umt5_xxl: shared_pos=False, so one relative
# position embedding per block) -> transformers `UMT5EncoderModel`. Wan's FFN is
# `fc2(fc1(x) * GELU(gate.0(x)))`; transformers' is `wo(GELU(wi_0(x)) * wi_1(x))`.
WAN_T5_TO_HF: tuple[tuple[str, str], ...] = (
    (r"^token_embedding\.weight$", "shared.weight"),
    (r"^blocks\.(\d+)\.norm1\.weight$", r"encoder.block.\1.layer.0.layer_norm.weight"),
    (
        r"^blocks\.(\d+)\.attn\.([qkvo])\.weight$",
        r"encoder.block.\1.layer.0.SelfAttention.\2.weight",
    ),
    (
        r"^blocks\.(\d+)\.pos_embedding\.embedding\.weight$",
        r"encoder.block.\1.layer.0.SelfAttention.relative_attention_bias.weight",
    ),
    (r"^blocks\.(\d+)\.norm2\.weight$", r"encoder.block.\1.layer.1.layer_norm.weight"),
    (
        r"^blocks\.(\d+)\.ffn\.gate\.0\.weight$",
        r"encoder.block.\1.layer.1.DenseReluDense.wi_0.weight",
    ),
    (r"^blocks\.(\d+)\.ffn\.fc1\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wi_1.weight"),
    (r"^blocks\.(\d+)\.ffn\.fc2\.weight$", r"encoder.block.\1.layer.1.DenseReluDense.wo.weight"),
    (r"^norm\.weight$", "encoder.final_layer_norm.weight"),
)
_WAN_COMPILED = tuple((re.compile(p), r) for p, r in WAN_T5_TO_HF)

# Leading prefixes of bundled / wrapped text encoders; removed only when what remains is a
# transformers T5 name (`shared.` / `encoder.`).
TEXT_PREFIXES = (
    "text_encoders.umt5xxl.transformer.",
    "text_encoders.t5xxl.transformer.",
    "cond_stage_model.transformer.",
    "text_encoder.",
    "transformer.",
)

# transformers names that are kept; anything else in a recognised file (the decoder of a full
# T5, `lm_head`, the duplicate tied `encoder.embed_tokens`) is ignored.
HF_ENCODER_KEY = re.compile(
    r"^(shared\.weight|encoder\.final_layer_norm\.weight|encoder\.block\.\d+\.layer\.[01]\..+)$"
)
_HF_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
_WAN_BLOCK = re.compile(r"^blocks\.(\d+)\.attn\.q\.weight$")

# Projections stored low (fp16/bf16/fp8 with a per-tensor scale) in the ComfyUI files.
LINEAR_WEIGHT = re.compile(
    r"^encoder\.block\.\d+\.layer\.(0\.SelfAttention\.[qkvo]|1\.DenseReluDense\.(wi_0|wi_1|wo))\.weight$"
)


# What a file that is not a text encoder at all looks like, and what to tell the user.
# (predicate over the set of key names, message); the first match wins.
FOREIGN_MODELS: tuple[tuple[object, str], ...] = (
    (
        lambda k: _any(k, "lora_up", "lora_down", ".lora_A.", ".lora_B.", "lora.up", "lora.down"),
        "a LoRA (low-rank adapter), not a text encoder. The text encoder is " + UMT5_FILES,
    ),
    (
        lambda k: (
            _starts(k, "head.modulation", "patch_embedding.", "condition_embedder.", "proj_out.")
            or _any(k, ".self_attn.q.", ".cross_attn.q.", ".attn1.to_q.")
        ),
        "a Wan DiT (the diffusion model), not the text encoder. Load it as the DiT "
        "(models/diffusion_models, `load_dit`); the text encoder is " + UMT5_FILES,
    ),
    (
        lambda k: _starts(
            k,
            "input_blocks.",
            "down_blocks.",
            "double_blocks.",
            "single_blocks.",
            "joint_blocks.",
            "transformer_blocks.",
        ),
        "a diffusion model (UNet / image transformer), not a text encoder. The text encoder is "
        + UMT5_FILES,
    ),
    (
        lambda k: _starts(
            k,
            "decoder.conv",
            "decoder.up",
            "decoder.mid",
            "encoder.conv",
            "encoder.down",
            "first_stage_model.",
            "post_quant_conv.",
        ),
        "a VAE (it decodes latents to video), not a text encoder. Load it as the VAE "
        "(models/vae, wan_2.1_vae.safetensors); the text encoder is " + UMT5_FILES,
    ),
    (
        lambda k: _starts(
            k, "text_model.", "vision_model.", "transformer.resblocks.", "visual.", "clip_"
        ),
        "a CLIP text/vision encoder (clip_l, open-clip, or Wan's clip_vision_h used for "
        "image-to-video), not umT5-XXL. Wan2.1 text-to-video needs " + UMT5_FILES,
    ),
    (
        lambda k: _starts(k, "layers.", "model.layers.", "embed_tokens."),
        "a decoder-only language model (Llama / Qwen / Gemma style), not umT5-XXL. Wan2.1 needs "
        + UMT5_FILES,
    ),
)


def identify_foreign(names: set[str]) -> str | None:
    """The message for a file that is recognisably not a T5-family encoder, else None."""
    for predicate, message in FOREIGN_MODELS:
        if predicate(names):  # type: ignore[operator]
            return message
    return None


def strip_text_prefix(name: str) -> str:
    """Remove a bundling prefix (`text_encoders.umt5xxl.transformer.` ...) from a T5 name."""
    for prefix in TEXT_PREFIXES:
        if name.startswith(prefix) and name[len(prefix) :].startswith(("shared.", "encoder.")):
            return name[len(prefix) :]
    return name


def detect_layout(names: set[str]) -> str | None:
    """ "hf" (transformers / ComfyUI T5 names), "wan" (official Wan t5.py names) or None."""
    if any(_HF_BLOCK.match(k) for k in names):
        return "hf"
    if "token_embedding.weight" in names and any(_WAN_BLOCK.match(k) for k in names):
        return "wan"
    return None


def to_hf_name(name: str, layout: str) -> str | None:
    """The transformers name of one (stripped) key, or None for a key that is not used."""
    if layout == "wan":
        for pattern, repl in _WAN_COMPILED:
            new, n = pattern.subn(repl, name)
            if n:
                return new
        return None
    if name == "encoder.embed_tokens.weight":
        return "shared.weight"  # tied copy; `shared.weight` wins when both are present
    return name if HF_ENCODER_KEY.match(name) else None


def block_indices(names: Iterable[str]) -> list[int]:
    return sorted({int(m.group(1)) for k in names if (m := _HF_BLOCK.match(k))})


def identify_t5_variant(names: set[str], shapes: Mapping[str, Sequence[int]]) -> str | None:
    """The message for a T5-family encoder that is not umT5 (by its FFN and position bias)."""
    vocab = shapes.get("shared.weight", (0, 0))[0]
    d_model = shapes.get("shared.weight", (0, 0))[-1]
    if any(k.endswith(".DenseReluDense.wi.weight") for k in names):
        return (
            f"an original T5 / T5-base-style encoder (ReLU feed-forward, d_model {d_model}, "
            f"vocabulary {vocab}), not umT5-XXL (gated-GELU). Wan2.1 needs " + UMT5_FILES
        )
    blocks = block_indices(names)
    with_bias = [
        i
        for i in blocks
        if f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight" in names
    ]
    if len(blocks) > 1 and with_bias == [0]:
        guess = {32128: "T5 v1.1 / Flan-T5 (t5xxl_fp16.safetensors, used by Flux and SD3)"}.get(
            vocab, "a T5 v1.1 / mT5 / Flan-T5"
        )
        return (
            f"{guess} text encoder: one position bias shared by all {len(blocks)} layers and a "
            f"vocabulary of {vocab} tokens. umT5 has a position bias in every layer and 256384 "
            "tokens; Wan2.1 needs " + UMT5_FILES
        )
    if "pos_embedding.embedding.weight" in names:
        return (
            "a T5 encoder in Wan's naming with one shared position bias, not umT5-XXL (which has "
            "one per block). Wan2.1 needs " + UMT5_FILES
        )
    return None


def umt5_config_from_shapes(shapes: Mapping[str, Sequence[int]]) -> dict:
    """`UMT5Config` keyword arguments read from transformers-named shapes.

    vocab and d_model from `shared.weight`; heads and buckets from block 0's
    `relative_attention_bias` [buckets, heads]; d_kv = q rows / heads; d_ff from `wi_0`; layers
    = number of `encoder.block.N`. Fixed by umT5: max distance 128, gated-GELU (tanh), eps 1e-6.
    """
    vocab, d_model = shapes["shared.weight"]
    attn = "encoder.block.0.layer.0.SelfAttention."
    buckets, heads = shapes[attn + "relative_attention_bias.weight"]
    inner = shapes[attn + "q.weight"][0]
    return dict(
        vocab_size=int(vocab),
        d_model=int(d_model),
        d_kv=int(inner) // int(heads),
        num_heads=int(heads),
        d_ff=int(shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]),
        num_layers=len(block_indices(shapes)),
        relative_attention_num_buckets=int(buckets),
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
