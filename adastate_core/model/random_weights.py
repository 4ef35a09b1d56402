"""Random-weight Wan2.1 DiTs: for tests, benchmarks and the smoke demo (speed does not depend
on the weights; no download is ever needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from .config import WanConfig

TINY = WanConfig(
    dim=64, ffn_dim=128, num_heads=4, num_layers=2, freq_dim=32, text_dim=32, text_len=16
)


def random_state_dict(
    config: WanConfig,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    *,
    draw_on_device: bool = False,
) -> dict[str, Tensor]:
    """Canonical state dict with every tensor random (none left zero, unlike the official init).

    Linear weights ~ N(0, 1/fan_in) so activations keep their scale through any depth; biases,
    modulation tables ~ N(0, 0.1); norm weights ~ 1 + N(0, 0.1).
    Values are drawn on the CPU in fp32 (the same on every machine) and then moved; with
    `draw_on_device` they are drawn directly on `device` in `dtype` (full-size GPU benchmarks:
    the host draws ~50 M values/s, minutes of device time for a 14B model; the same values
    as the default on a CPU in fp32).
    """
    where = torch.device(device) if draw_on_device else torch.device("cpu")
    draw_dtype = dtype if draw_on_device else torch.float32
    gen = torch.Generator(device=where).manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in config.tensor_shapes().items():
        t = torch.randn(shape, generator=gen, dtype=draw_dtype, device=where)
        if key.endswith(".weight") and len(shape) >= 2:
            t.mul_(1.0 / math.sqrt(math.prod(shape[1:])))
        elif "norm" in key:
            t.mul_(0.1).add_(1.0)
        else:
            t.mul_(0.1)
        out[key] = t.to(device=device, dtype=dtype)
    return out


def save_random_checkpoint(
    path: str | Path, config: WanConfig = TINY, seed: int = 0, layout: str = "comfyui"
) -> Path:
    """Write a random-weight checkpoint in a real on-disk layout.

    comfyui: fp16 safetensors, keys prefixed `model.diffusion_model.`; official: fp32
    safetensors; self-forcing: a `.pt` with `generator_ema` / `generator` and `model.`-prefixed
    bf16 tensors. The values shapes cannot tell (heads, text length, eps) are stored as a
    `config` beside the weights (safetensors metadata / a plain dict in the pickle).
    """
    from safetensors.torch import save_file

    sd = random_state_dict(config, seed)
    hints = {"num_heads": config.num_heads, "text_len": config.text_len, "eps": config.eps}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "comfyui":
        tensors = {"model.diffusion_model." + k: v.half() for k, v in sd.items()}
        save_file(tensors, str(path), {"config": json.dumps(hints)})
    elif layout == "official":
        save_file(sd, str(path), {"config": json.dumps(hints)})
    elif layout == "self-forcing":
        generator = {"model." + k: v.to(torch.bfloat16) for k, v in sd.items()}
        torch.save({"generator": generator, "generator_ema": generator, "config": hints}, path)
    else:
        raise ValueError(f"unknown layout {layout!r}; use comfyui, official or self-forcing")
    return path


def random_model(
    config: WanConfig = TINY,
    seed: int = 0,
    *,
    dtype: torch.dtype | str | None = None,
    device: str = "cpu",
    attention: str = "sdpa",
):
    """A random-weight `CausalWanDiT` loaded through the real loader (dtype policy included)."""
    from .loader import load_dit

    return load_dit(
        random_state_dict(config, seed),
        dtype=dtype,
        device=device,
        attention=attention,
        num_heads=config.num_heads,
        text_len=config.text_len,
        eps=config.eps,
    )
