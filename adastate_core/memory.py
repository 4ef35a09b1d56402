"""How much memory a stream needs, and how much a device has free: the CLI refuses a request
that cannot fit before loading anything, and the ComfyUI nodes tell the memory manager what to
keep free beside the DiT. A deliberate over-estimate of the working set, not a profile."""

from __future__ import annotations

import os

import torch

from .model.config import WanConfig
from .stream.config import StreamConfig
from .vae import estimate_cache_bytes


def _size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def kv_and_activation_bytes(cfg: WanConfig, config: StreamConfig, compute: torch.dtype) -> int:
    """Window K/V (anchor + state + cache + chunk, twice for the value copies made while a
    chunk is denoised) and the live activations of one DiT call."""
    h, w = config.latent_size
    tokens = (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
    frames = config.anchor_frames + 2 * config.state + config.window + config.chunk
    kv = 2 * cfg.num_layers * frames * tokens * cfg.dim * _size(compute)
    live = (config.state + config.chunk) * tokens
    activations = live * (cfg.ffn_dim + 8 * cfg.dim) * 4 + 4 * live * frames * tokens * 4
    return int(2 * kv + activations)


def stream_bytes(
    cfg: WanConfig,
    params: int,
    config: StreamConfig,
    compute: torch.dtype,
    vae_dtype: torch.dtype,
    vae_dim: int = 96,
) -> dict[str, int]:
    """{'DiT weights', 'K/V + activations', 'VAE cache', 'VAE activations', 'total'} bytes for
    a DiT of `params` parameters held in `compute`."""
    parts = {
        "DiT weights": params * _size(compute),
        "K/V + activations": kv_and_activation_bytes(cfg, config, compute),
        "VAE cache": estimate_cache_bytes(config.height, config.width, vae_dtype, dim=vae_dim),
    }
    # one latent frame through the decoder: a few full-resolution tensors of its last stage
    parts["VAE activations"] = 8 * vae_dim * config.height * config.width * _size(vae_dtype)
    parts["total"] = sum(parts.values())
    return parts


def available_bytes(device: torch.device) -> int | None:
    """Free memory on `device` (CUDA: free VRAM; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(free)
        except Exception:
            return None
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None
