"""Save a stream state to one safetensors file and resume from it.

The file holds the cached K/V and latents of the window and the anchor slot and the prompt
rows; its metadata holds the stream config (JSON), the chunk index and the fingerprint of the
DiT that made the cache. Cross-attention K/V are recomputed on load (they follow from the
prompt rows). Resuming gives bit-identical chunks to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
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
    if stream.lead is not None:
        tensors["lead"] = stream.lead
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
    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta["checksums"] = json.dumps({k: _crc(v) for k, v in cpu.items()}, sort_keys=True)
    if path.is_dir():
        raise StreamError(
            f"cannot save the stream state to {path}: it is a folder; give a file name"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise StreamError(f"cannot create the folder for {path}: {err.strerror}") from None
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file(cpu, str(tmp), meta)
        with open(tmp, "rb+") as fh:  # on disk before it takes the final name
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, SafetensorError) as err:
        tmp.unlink(missing_ok=True)
        why = getattr(err, "strerror", None) or str(err)
        raise StreamError(f"could not save the stream state to {path}: {why}") from None
    return path


def _crc(t: Tensor) -> int:
    """CRC-32 of a tensor's bytes (bit rot and truncation show on load)."""
    return zlib.crc32(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else 0


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read(path: Path) -> tuple[dict[str, str], dict[str, Tensor]]:
    """(metadata, tensors) of a saved stream state, checked; StreamError says what is wrong."""
    if not path.exists():
        raise StreamError(f"saved stream state not found: {path}")
    if path.is_dir():
        raise StreamError(f"{path} is a folder, not a saved stream state file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError) as err:
        why = getattr(err, "strerror", None) or str(err)
        raise StreamError(
            f"{path} is not a readable stream state ({why}): it is damaged or not a state "
            "file; start a new output"
        ) from None
    if meta.get("format") != FORMAT:
        raise StreamError(
            f"{path} is not an AdaState stream state (format {meta.get('format')!r}); "
            "save one with --save-state / save_stream"
        )
    sums = meta.get("checksums")
    if sums is not None:
        try:
            expected = json.loads(sums)
        except ValueError:
            expected = None
        bad = [k for k, v in tensors.items() if expected is None or expected.get(k) != _crc(v)]
        if bad:
            raise StreamError(
                f"{path} is damaged: {', '.join(sorted(bad)[:3])} do(es) not match the "
                "checksum saved with it; start a new output (the video itself is unaffected)"
            )
    for key in ("config", "chunk_index", "model_id"):
        if key not in meta:
            raise StreamError(f"{path} lacks its {key!r}: it is damaged; start a new output")
    if "conditioning" not in tensors:
        raise StreamError(f"{path} lacks its prompt rows: it is damaged; start a new output")
    return meta, tensors


def _saved_config(meta: dict[str, str], path: Path) -> StreamConfig:
    try:
        data = json.loads(meta["config"])
    except ValueError:
        raise StreamError(f"{path} has unreadable settings: it is damaged") from None
    known = {f.name for f in dataclasses.fields(StreamConfig)}
    newer = sorted(set(data) - known) if isinstance(data, dict) else []
    if newer:
        raise StreamError(
            f"{path} was saved by a newer AdaState (settings {', '.join(newer)} are unknown "
            "here); update adastate to resume it"
        )
    try:
        data["steps"] = tuple(data["steps"])
        return StreamConfig(**data)
    except (TypeError, KeyError, ValueError) as err:
        raise StreamError(f"{path} has unusable settings ({err}): it is damaged") from None


def load_stream(
    model: CausalWanDiT, path: str | os.PathLike, config: StreamConfig | None = None
) -> StreamState:
    """Resume a stream saved by `save_stream`. `config`, if given, must equal the saved one;
    the model must be the one that made the cache (same weights)."""
    return _load(model, Path(path), config)[0]


def load_stream_with_extras(
    model: CausalWanDiT, path: str | os.PathLike, config: StreamConfig | None = None
) -> tuple[StreamState, dict[str, Tensor], dict[str, str]]:
    """`load_stream` and `read_extras` from one read of the file."""
    return _load(model, Path(path), config)


def _extras(meta: dict[str, str], tensors: dict[str, Tensor]):
    return (
        {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")},
        {k[len("extra.") :]: v for k, v in meta.items() if k.startswith("extra.")},
    )


def _load(model: CausalWanDiT, path: Path, config: StreamConfig | None):
    meta, tensors = _read(path)
    saved = _saved_config(meta, path)
    same_config_or_raise(saved, config)
    try:
        chunk_index = int(meta["chunk_index"])
    except ValueError:
        chunk_index = -1
    if chunk_index < 0:
        raise StreamError(f"{path} has an unusable chunk index: it is damaged")
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
    stream = StreamState(
        config=saved,
        chunk_index=chunk_index,
        window=part("window"),
        anchor=part("anchor"),
        conditioning=cond,
        prompt=prompt,
        model_id=meta["model_id"],
        token=new_token(),
        lead=tensors["lead"].to(device) if "lead" in tensors else None,
    )
    return (stream, *_extras(meta, tensors))


def read_extras(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The `extras` tensors and `extra_meta` strings saved with a stream state (checked as
    `load_stream` checks it; StreamError says what is wrong)."""
    meta, tensors = _read(Path(path))
    return _extras(meta, tensors)


def is_stream_state(path: str | os.PathLike) -> bool:
    """Whether `path` is a file this module wrote (read from its header only)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return (fh.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError):
        return False


def saved_settings(path: str | os.PathLike) -> tuple[StreamConfig, int, dict[str, str]]:
    """(config, chunk index, extra metadata) of a saved state, read and checked without a
    model (so a CLI can refuse a bad resume before loading anything)."""
    path = Path(path)
    meta, _ = _read(path)
    config = _saved_config(meta, path)
    try:
        index = int(meta["chunk_index"])
    except ValueError:
        raise StreamError(f"{path} has an unusable chunk index: it is damaged") from None
    return config, index, _extras(meta, {})[1]
