"""The decoder's causal cache as plain tensors + metadata, so a run state can be saved with it
(a resumed video then decodes exactly as if it had never stopped)."""

from __future__ import annotations

import torch
from torch import Tensor

from .decoder import DecoderCache


def cache_to_tensors(cache: DecoderCache | None) -> tuple[dict[str, Tensor], dict]:
    """-> ({"h0": ..., "h1": ...}, {"latent_frames": n, "histories": count}); empty for None."""
    if cache is None:
        return {}, {"latent_frames": 0, "histories": 0}
    tensors = {f"h{i}": h for i, h in enumerate(cache.histories)}
    return tensors, {"latent_frames": cache.latent_frames, "histories": len(cache.histories)}


def cache_from_tensors(
    tensors: dict[str, Tensor], meta: dict, device: str | torch.device | None = None
) -> DecoderCache | None:
    count = int(meta.get("histories", 0))
    if count == 0:
        return None
    histories = tuple(
        tensors[f"h{i}"] if device is None else tensors[f"h{i}"].to(device) for i in range(count)
    )
    return DecoderCache(histories, int(meta["latent_frames"]))
