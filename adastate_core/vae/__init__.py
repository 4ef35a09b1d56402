"""The Wan2.1 VAE decoder and encoder (streamed with immutable causal caches) and their checkpoint
loading."""

from .cache_io import cache_from_tensors, cache_to_tensors
from .decoder import (
    LATENT_MEAN,
    LATENT_STD,
    DecoderCache,
    WanVAEDecoder,
    estimate_cache_bytes,
    video_frames,
)
from .encoder import EncoderCache, WanVAEEncoder, latent_frames
from .loader import load_vae, load_vae_encoder, read_vae_checkpoint

__all__ = [
    "LATENT_MEAN",
    "LATENT_STD",
    "DecoderCache",
    "EncoderCache",
    "WanVAEDecoder",
    "WanVAEEncoder",
    "cache_from_tensors",
    "cache_to_tensors",
    "estimate_cache_bytes",
    "latent_frames",
    "load_vae",
    "load_vae_encoder",
    "read_vae_checkpoint",
    "video_frames",
]
