"""Random-weight Wan2.1 DiTs: for tests, benchmarks and the smoke demo (speed does not depend
on the weights; no download is ever needed)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import WanConfig

TINY = WanConfig(
    dim=64, ffn_dim=128, num_heads=4, num_layers=2, freq_dim=32, text_dim=32, text_len=16
)


def random_state_dict(
    config: WanConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> dict[str, Tensor]:
    """Canonical state dict with every tensor random (none left zero, unlike the official init).

    Linear weights ~ N(0, 1/fan_in) so activations keep their scale through any depth; biases,
    modulation tables ~ N(0, 0.1); norm weights ~ 1 + N(0, 0.1).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in config.tensor_shapes().items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32)
        if key.endswith(".weight") and len(shape) >= 2:
            t *= 1.0 / math.sqrt(math.prod(shape[1:]))
        elif "norm" in key:
            t = 1.0 + 0.1 * t
        else:
            t *= 0.1
        out[key] = t.to(device=device, dtype=dtype)
    return out
