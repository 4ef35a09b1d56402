"""Random-weight Wan VAEs for tests and benchmarks (speed does not depend on weights)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .decoder import WanVAEDecoder


def _random(key: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Conv weights ~ N(0, 1/fan_in) (activations keep their scale), norm gains ~ 1 + N(0, 0.1),
    biases ~ N(0, 0.1): every tensor random, none left at its init value."""
    t = torch.randn(shape, generator=gen)
    if key.endswith("gamma"):
        return 1.0 + 0.1 * t
    if key.endswith("weight") and len(shape) >= 2:
        return t / math.sqrt(math.prod(shape[1:]))
    return 0.1 * t


def random_state_dict(
    dim: int = 8,
    z_dim: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    encoder: bool = False,
) -> dict[str, Tensor]:
    """Official-name (`decoder.*`, `conv2.*`) state dict of a random decoder of base `dim`;
    with `encoder`, the whole VAE (also `encoder.*`, `conv1.*`, drawn after the decoder, so
    the decoder tensors are the same as without)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = WanVAEDecoder(dim, z_dim, device="meta").state_dict()
    out = {k: _random(k, tuple(v.shape), gen).to(dtype) for k, v in shapes.items()}
    if encoder:
        from .encoder import WanVAEEncoder

        enc = WanVAEEncoder(dim, z_dim, device="meta").state_dict()
        out.update({k: _random(k, tuple(v.shape), gen).to(dtype) for k, v in enc.items()})
    return out


@torch.no_grad()
def randomise_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite every parameter of any VAE module (ours or diffusers') by the same rule."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        p.copy_(_random(name, tuple(p.shape), gen))
    return module
