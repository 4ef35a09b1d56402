"""The Wan2.1 VAE decoder (streamed with an immutable causal cache) and its checkpoint loading."""

from .cache_io import cache_from_tensors, cache_to_tensors
from .decoder import (
    LATENT_MEAN,
    LATENT_STD,
    DecoderCache,
    WanVAEDecoder,
    estimate_cache_bytes,
    video_frames,
)
from .loader import load_vae, read_vae_checkpoint

__all__ = [
    "LATENT_MEAN",
    "LATENT_STD",
    "DecoderCache",
    "WanVAEDecoder",
    "cache_from_tensors",
    "cache_to_tensors",
    "estimate_cache_bytes",
    "load_vae",
    "read_vae_checkpoint",
    "video_frames",
]
