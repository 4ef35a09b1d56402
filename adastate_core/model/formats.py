"""Checkpoint formats: recognising a file and mapping its names to the canonical (official) ones.

Everything here is data plus small pure functions over key names and shapes, so the rules can be
read in one place (REFERENCE.md §2).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence

from ..checkpoints import strip_prefixes

# Wrappers that training code inserts anywhere in a name (FSDP, activation checkpointing,
# torch.compile); removed wherever they occur.
WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")

# Leading prefixes removed (repeatedly) from every name.
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "module.", "model.")

# Keys that carry no weights of their own and are dropped after reading.
MARKER_KEYS = ("scaled_fp8",)
IGNORED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")
# Per-linear dequantisation scale of fp8 files: weight = fp8 * scale.
SCALE_SUFFIXES = (".scale_weight", ".weight_scale")

# diffusers `WanTransformer3DModel` -> official names, applied in order (first match wins).
DIFFUSERS_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^blocks\.(\d+)\.scale_shift_table$", r"blocks.\1.modulation"),
    (r"^blocks\.(\d+)\.attn1\.to_out\.0\.", r"blocks.\1.self_attn.o."),
    (r"^blocks\.(\d+)\.attn2\.to_out\.0\.", r"blocks.\1.cross_attn.o."),
    (r"^blocks\.(\d+)\.attn1\.to_([qkv])\.", r"blocks.\1.self_attn.\2."),
    (r"^blocks\.(\d+)\.attn2\.to_([qkv])\.", r"blocks.\1.cross_attn.\2."),
    (r"^blocks\.(\d+)\.attn1\.norm_([qk])\.", r"blocks.\1.self_attn.norm_\2."),
    (r"^blocks\.(\d+)\.attn2\.norm_([qk])\.", r"blocks.\1.cross_attn.norm_\2."),
    (r"^blocks\.(\d+)\.norm2\.", r"blocks.\1.norm3."),
    (r"^blocks\.(\d+)\.ffn\.net\.0\.proj\.", r"blocks.\1.ffn.0."),
    (r"^blocks\.(\d+)\.ffn\.net\.2\.", r"blocks.\1.ffn.2."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
)
_DIFFUSERS_COMPILED = tuple((re.compile(p), r) for p, r in DIFFUSERS_RENAMES)

# Linear (and patch-embedding) weights that run in the compute dtype and may be stored low
# (bf16/fp16/fp8); everything else (norms, modulation, time embedding, head) stays precise.
COMPUTE_WEIGHT = re.compile(
    r"^(blocks\.\d+\.(self_attn|cross_attn)\.[qkvo]|blocks\.\d+\.ffn\.[02]"
    r"|text_embedding\.[02]|patch_embedding)\.(weight|bias)$"
)

# What a file that is not a usable Wan2.1 T2V DiT looks like, and what to tell the user.
# (predicate over the set of stripped key names, message); the first match wins.
WAN_T2V_FILE = (
    "a causal few-step Wan2.1 T2V checkpoint such as self_forcing_dmd.pt (Self-Forcing; not the "
    "base wan2.1_t2v_1.3B model, which is not distilled for chunk-wise sampling)"
)


def _any(keys: Iterable[str], *needles: str) -> bool:
    return any(n in k for k in keys for n in needles)


def _starts(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


FOREIGN_MODELS: tuple[tuple[object, str], ...] = (
    (
        lambda k: _any(k, "lora_up", "lora_down", ".lora_A.", ".lora_B.", "lora.up", "lora.down"),
        "a LoRA (low-rank adapter), not a full model. Load a full causal Wan2.1 DiT here "
        f"({WAN_T2V_FILE}); LoRAs are not supported by this loader",
    ),
    (
        lambda k: _starts(k, "vace_blocks.", "vace_patch_embedding."),
        "a Wan2.1 VACE model (video editing / reference conditioning). AdaState needs a "
        f"text-to-video DiT: {WAN_T2V_FILE}",
    ),
    (
        lambda k: "img_emb.emb_pos" in k,
        "a Wan2.1 first-last-frame-to-video (FLF2V) model. AdaState needs a text-to-video DiT: "
        f"{WAN_T2V_FILE}",
    ),
    (
        lambda k: (
            _starts(k, "img_emb.", "condition_embedder.image_embedder.")
            or _any(k, ".add_k_proj.", ".k_img.")
        ),
        "a Wan2.1 image-to-video (I2V) model. AdaState needs a text-to-video DiT: " + WAN_T2V_FILE,
    ),
    (
        lambda k: _starts(k, "control_adapter."),
        "a camera-controlled Wan variant (control adapter). AdaState needs a text-to-video DiT: "
        + WAN_T2V_FILE,
    ),
    (
        lambda k: _starts(k, "input_blocks.", "down_blocks.", "mid_block.", "middle_block."),
        "a UNet (Stable Diffusion family), not a Wan DiT. AdaState needs " + WAN_T2V_FILE,
    ),
    (
        lambda k: _starts(
            k,
            "double_blocks.",
            "single_blocks.",
            "single_transformer_blocks.",
            "joint_blocks.",
            "transformer_blocks.",
        ),
        "a Flux / SD3-style image transformer, not a Wan DiT. AdaState needs " + WAN_T2V_FILE,
    ),
    (
        lambda k: (
            _starts(k, "decoder.", "encoder.conv", "encoder.down", "first_stage_model.")
            and not _starts(k, "encoder.block.", "blocks.")
        ),
        "a VAE, not a diffusion model. Put it in models/vae and load it as the VAE "
        "(wan_2.1_vae.safetensors); the DiT slot needs " + WAN_T2V_FILE,
    ),
    (
        lambda k: _starts(k, "shared.", "encoder.block.", "encoder.final_layer_norm"),
        "a T5 / umT5 text encoder, not a diffusion model. Put it in models/text_encoders "
        "(umt5_xxl_fp8_e4m3fn_scaled.safetensors); the DiT slot needs " + WAN_T2V_FILE,
    ),
    (
        lambda k: _starts(
            k,
            "text_model.",
            "vision_model.",
            "transformer.resblocks.",
            "visual.",
            "cond_stage_model.",
        ),
        "a CLIP text/vision encoder, not a diffusion model. AdaState needs " + WAN_T2V_FILE,
    ),
)


def strip_name(name: str) -> str:
    """Remove training wrappers and leading container prefixes from one key name."""
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    return strip_prefixes(name, PREFIXES)


def is_diffusers(names: Iterable[str]) -> bool:
    return _starts(names, "condition_embedder.", "proj_out.", "scale_shift_table") or _any(
        names, ".attn1.to_q."
    )


def diffusers_to_canonical(name: str) -> str:
    for pattern, repl in _DIFFUSERS_COMPILED:
        new, n = pattern.subn(repl, name)
        if n:
            return new
    return name


def identify_foreign(names: set[str]) -> str | None:
    """The message for a file that is recognisably *not* a Wan2.1 T2V DiT, else None."""
    for predicate, message in FOREIGN_MODELS:
        if predicate(names):  # type: ignore[operator]
            return message
    return None


def identify_wan_variant(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """The message for a Wan-architecture DiT that is not text-to-video (by its channels)."""
    patch = shapes.get("patch_embedding.weight")
    if patch is None:
        return None
    in_dim = int(patch[1])
    head = shapes.get("head.head.weight")
    out_dim = int(head[0]) // max(1, math.prod(int(s) for s in patch[2:])) if head else in_dim
    if in_dim == 48 and out_dim == 48:
        return (
            "a Wan2.2 TI2V-5B model (48-channel latent, Wan2.2 VAE). AdaState runs the Wan2.1 "
            f"architecture with the 16-channel Wan2.1 VAE: {WAN_T2V_FILE}"
        )
    if in_dim != 16:
        return (
            f"a conditioned Wan variant ({in_dim} input channels: image-to-video, Fun/InP or "
            f"control). AdaState needs a text-to-video DiT with 16 input channels: {WAN_T2V_FILE}"
        )
    return None
