"""Save a stream state to one safetensors file and resume from it.

The file holds the cached K/V and latents of the window and the anchor slot and the prompt
rows; its metadata holds the stream config (JSON), the chunk index and the fingerprint of the
DiT that made the cache. Cross-attention K/V are recomputed on load (they follow from the
prompt rows). Resuming gives bit-identical chunks to an uninterrupted run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..model import CausalWanDiT
from .config import StreamConfig
from .engine import StreamError, same_config_or_raise
from .state import CachedFrames, StreamState, new_token

FORMAT = "adastate-stream/1"


def save_stream(
    stream: StreamState,
    path: str | os.PathLike,
    *,
    extras: dict[str, Tensor] | None = None,
    extra_meta: dict[str, str] | None = None,
) -> Path:
    """Write `stream` to `path` (.safetensors); written to a temporary file then renamed, so
    an interrupted save never leaves a half file under the final name. `extras` (tensors) and
    `extra_meta` (strings) ride along for callers such as the CLI (decoder cache, progress);
    read them back with `read_extras`."""
    path = Path(path)
    tensors = {"conditioning": stream.conditioning}
    tensors.update({f"extra.{k}": v for k, v in (extras or {}).items()})
    for name, part in (("window", stream.window), ("anchor", stream.anchor)):
        if part is not None:
            tensors[f"{name}.k"] = part.k
            tensors[f"{name}.v"] = part.v
            if part.latent is not None:
                tensors[f"{name}.latent"] = part.latent
    meta = {
        "format": FORMAT,
        "config": stream.config.to_json(),
        "chunk_index": str(stream.chunk_index),
        "model_id": stream.model_id,
        **{f"extra.{k}": v for k, v in (extra_meta or {}).items()},
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StreamError(f"cannot create the folder for {path}: {err.strerror}") from None
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), meta)
    os.replace(tmp, path)
    return path


def load_stream(
    model: CausalWanDiT, path: str | os.PathLike, config: StreamConfig | None = None
) -> StreamState:
    """Resume a stream saved by `save_stream`. `config`, if given, must equal the saved one;
    the model must be the one that made the cache (same weights)."""
    path = Path(path)
    if not path.is_file():
        raise StreamError(f"saved stream state not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as err:
        raise StreamError(f"{path} is not a readable stream state ({err})") from None
    if meta.get("format") != FORMAT:
        raise StreamError(
            f"{path} is not an AdaState stream state (format {meta.get('format')!r}); "
            "save one with --save-state / save_stream"
        )
    saved = StreamConfig.from_json(meta["config"])
    same_config_or_raise(saved, config)
    if meta["model_id"] != model.fingerprint():
        raise StreamError(
            f"{path} was made with a different model (or another weight precision of it); "
            "resume it with the DiT file that started the stream"
        )
    device = model.device

    def part(name: str) -> CachedFrames | None:
        if f"{name}.k" not in tensors:
            return None
        lat = tensors.get(f"{name}.latent")
        return CachedFrames(
            tensors[f"{name}.k"].to(device),
            tensors[f"{name}.v"].to(device),
            None if lat is None else lat.to(device),
        )

    cond = tensors["conditioning"].to(device)
    with torch.no_grad():
        prompt = model.encode_context(cond)
    return StreamState(
        config=saved,
        chunk_index=int(meta["chunk_index"]),
        window=part("window"),
        anchor=part("anchor"),
        conditioning=cond,
        prompt=prompt,
        model_id=meta["model_id"],
        token=new_token(),
    )


def read_extras(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The `extras` tensors and `extra_meta` strings saved with a stream state."""
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        meta = fh.metadata() or {}
        tensors = {
            k[len("extra.") :]: fh.get_tensor(k) for k in fh.keys() if k.startswith("extra.")
        }
    return tensors, {k[len("extra.") :]: v for k, v in meta.items() if k.startswith("extra.")}
