"""VAE checkpoint formats: recognising a file by its key names and mapping them to the official
Wan2.1 names (REFERENCE.md §3). Data plus small pure functions over names and shapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..checkpoints import strip_prefixes

WAN21_VAE_FILE = "the Wan2.1 VAE wan_2.1_vae.safetensors (or Wan2.1_VAE.pth)"

# Leading prefixes removed (repeatedly) from every name: checkpoints that bundle a VAE.
PREFIXES = ("first_stage_model.", "vae.", "module.", "model.", "diffusion_model.")

# The official names the decoder needs, and those the encoder needs.
DECODE_PREFIXES = ("decoder.", "conv2.")
ENCODE_PREFIXES = ("encoder.", "conv1.")

# diffusers `AutoencoderKLWan` -> official names. (diffusers prefix, official prefix, is the
# block a residual block). diffusers nests the upsampling path as up_blocks.S.resnets.R /
# up_blocks.S.upsamplers.0; the official code has one flat list `decoder.upsamples.U` with
# U = S * (num_res_blocks + 2) + R, and the upsampler at R = num_res_blocks + 1.
DIFFUSERS_BLOCKS: tuple[tuple[str, str, bool], ...] = (
    (r"post_quant_conv\.", "conv2.", False),
    (r"decoder\.conv_in\.", "decoder.conv1.", False),
    (r"decoder\.mid_block\.resnets\.0\.", "decoder.middle.0.", True),
    (r"decoder\.mid_block\.attentions\.0\.", "decoder.middle.1.", False),
    (r"decoder\.mid_block\.resnets\.1\.", "decoder.middle.2.", True),
    (
        r"decoder\.up_blocks\.(?P<stage>\d+)\.resnets\.(?P<pos>\d+)\.",
        "decoder.upsamples.{u}.",
        True,
    ),
    (r"decoder\.up_blocks\.(?P<stage>\d+)\.upsamplers\.0\.", "decoder.upsamples.{u}.", False),
    (r"decoder\.norm_out\.", "decoder.head.0.", False),
    (r"decoder\.conv_out\.", "decoder.head.2.", False),
    # the encoder: diffusers keeps the official flat list of down blocks (residual blocks and
    # resamples) as encoder.down_blocks.I
    (r"quant_conv\.", "conv1.", False),
    (r"encoder\.conv_in\.", "encoder.conv1.", False),
    (r"encoder\.down_blocks\.(?P<index>\d+)\.", "encoder.downsamples.{index}.", True),
    (r"encoder\.mid_block\.resnets\.0\.", "encoder.middle.0.", True),
    (r"encoder\.mid_block\.attentions\.0\.", "encoder.middle.1.", False),
    (r"encoder\.mid_block\.resnets\.1\.", "encoder.middle.2.", True),
    (r"encoder\.norm_out\.", "encoder.head.0.", False),
    (r"encoder\.conv_out\.", "encoder.head.2.", False),
)
_DIFFUSERS_COMPILED = tuple((re.compile(p), r, res) for p, r, res in DIFFUSERS_BLOCKS)

# Inside a residual block: diffusers name -> official `residual.N` index.
DIFFUSERS_RESIDUAL = {
    "norm1.": "residual.0.",
    "conv1.": "residual.2.",
    "norm2.": "residual.3.",
    "conv2.": "residual.6.",
    "conv_shortcut.": "shortcut.",
}


def strip_name(name: str) -> str:
    return strip_prefixes(name, PREFIXES)


def diffusers_to_official(name: str, num_res_blocks: int = 2) -> str | None:
    """Official name of a diffusers AutoencoderKLWan key (decoder or encoder); None for keys
    neither uses."""
    for pattern, repl, residual in _DIFFUSERS_COMPILED:
        m = pattern.match(name)
        if not m:
            continue
        groups = m.groupdict()
        if "stage" in groups:
            pos = int(groups["pos"]) if groups.get("pos") is not None else num_res_blocks + 1
            repl = repl.format(u=int(groups["stage"]) * (num_res_blocks + 2) + pos)
        elif "index" in groups:
            repl = repl.format(index=int(groups["index"]))
        rest = name[m.end() :]
        if residual:
            for old, new in DIFFUSERS_RESIDUAL.items():
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
        return repl + rest
    return None


def diffusers_num_res_blocks(names: Iterable[str]) -> int:
    """Residual blocks per up stage, minus one (diffusers puts num_res_blocks + 1 there)."""
    pos = [
        int(m["pos"])
        for n in names
        if (m := re.match(r"decoder\.up_blocks\.0\.resnets\.(?P<pos>\d+)\.", n))
    ]
    return max(pos) if pos else 2


def _starts(names: Iterable[str], *prefixes: str) -> bool:
    return any(n.startswith(prefixes) for n in names)


def _any(names: Iterable[str], *needles: str) -> bool:
    return any(s in n for n in names for s in needles)


def is_official_wan(names: set[str]) -> bool:
    decoder = "decoder.conv1.weight" in names or "decoder.head.0.gamma" in names
    return decoder or ("encoder.conv1.weight" in names and "encoder.head.0.gamma" in names)


def is_diffusers_wan(names: set[str], shapes: Mapping[str, Sequence[int]]) -> bool:
    conv_in = shapes.get("decoder.conv_in.weight")
    decoder = "decoder.norm_out.gamma" in names or (conv_in is not None and len(conv_in) == 5)
    return decoder or "encoder.norm_out.gamma" in names


# What a file that is not a Wan VAE looks like, and what to tell the user (checked in order,
# before the Wan structure). (predicate over the stripped names, message)
FOREIGN_MODELS: tuple[tuple[object, str], ...] = (
    (
        lambda k: (
            _starts(k, "blocks.0.self_attn.", "head.modulation", "patch_embedding.")
            or _starts(k, "condition_embedder.", "scale_shift_table")
            or _any(k, ".attn1.to_q.")
        ),
        "a Wan DiT (the diffusion model), not a VAE. Put it in models/diffusion_models and load "
        f"it as the model; the VAE slot needs {WAN21_VAE_FILE}",
    ),
    (
        lambda k: _starts(
            k,
            "diffusion_model.",
            "input_blocks.",
            "double_blocks.",
            "single_blocks.",
            "joint_blocks.",
            "transformer_blocks.",
            "down_blocks.",
        ),
        f"a diffusion model (UNet / image transformer), not a VAE. AdaState needs {WAN21_VAE_FILE}",
    ),
    (
        lambda k: (
            _starts(k, "shared.", "encoder.block.", "encoder.final_layer_norm", "spiece_model")
            or _starts(k, "text_model.", "vision_model.", "transformer.resblocks.", "token_embd")
        ),
        "a text encoder (T5 / umT5 / CLIP), not a VAE. Put it in models/text_encoders; the VAE "
        f"slot needs {WAN21_VAE_FILE}",
    ),
    (
        lambda k: _any(k, "lora_up", "lora_down", ".lora_A.", ".lora_B."),
        f"a LoRA, not a VAE. AdaState needs {WAN21_VAE_FILE}",
    ),
)

OTHER_VAE = (
    "a VAE, but not a Wan one: its decoder has no Wan causal 3D structure (names like "
    "decoder.up.* / decoder.mid.* / decoder.conv_in are Stable Diffusion, SDXL, SD3 or Flux image "
    f"VAEs). AdaState needs {WAN21_VAE_FILE}"
)

WAN22_VAE = (
    "the Wan2.2 VAE (48-channel latent, for the Wan2.2 TI2V-5B model). AdaState needs "
    + WAN21_VAE_FILE
)


def identify_foreign(names: set[str]) -> str | None:
    """The message for a file that is recognisably not a VAE, else None."""
    for predicate, message in FOREIGN_MODELS:
        if predicate(names):  # type: ignore[operator]
            return message
    return None


def looks_like_vae(names: set[str]) -> bool:
    return _starts(names, "decoder.", "encoder.", "post_quant_conv.", "quant_conv.")
