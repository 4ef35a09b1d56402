"""On-disk cache of prompt embeddings, so a repeated prompt never loads the 6-11 GB encoder.

One safetensors file per (cleaned prompt, encoder identity), named by the SHA-256 of both;
the tensor is `embedding` [L, d_model] float32 (trimmed, EOS row included) and the metadata
repeats the prompt and the identity so a file can be checked and read by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from .clean import clean_text

PathLike = str | os.PathLike

CACHE_FORMAT = "adastate-text-embedding-v1"
_HEAD_BYTES = 1 << 20  # covers the safetensors header (tensor names, shapes, offsets)
_SAMPLE_BYTES = 1 << 16
_SAMPLES = 16


def file_identity(paths: Iterable[PathLike]) -> str:
    """Content fingerprint of model file(s) without reading them whole.

    SHA-256 over each file's size, its first MiB (the safetensors header lies there) and 16
    evenly spaced 64 KiB samples. Independent of the path and mtime, so a moved or copied
    file keeps its cached embeddings; any re-trained or re-quantised file differs.
    """
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        size = path.stat().st_size
        digest.update(f"{size}:".encode())
        with open(path, "rb") as fh:
            digest.update(fh.read(_HEAD_BYTES))
            for i in range(_SAMPLES):
                fh.seek(max(0, (size - _SAMPLE_BYTES) * i // (_SAMPLES - 1)))
                digest.update(fh.read(_SAMPLE_BYTES))
    return digest.hexdigest()


class EmbeddingCache:
    """Prompt embeddings on disk, keyed by the cleaned prompt and the encoder's identity.

    `encoder_id` is any string that changes whenever the embeddings would (see
    `adastate_core.text.encoder_identity`: weights, tokenizer and compute dtype).
    """

    def __init__(self, directory: PathLike):
        self.directory = Path(directory).expanduser()

    def key(self, prompt: str, encoder_id: str) -> str:
        """SHA-256 hex of (clean_text(prompt), encoder_id)."""
        payload = json.dumps(
            {"prompt": clean_text(prompt), "encoder": encoder_id, "format": CACHE_FORMAT},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def path(self, prompt: str, encoder_id: str) -> Path:
        return self.directory / f"{self.key(prompt, encoder_id)}.safetensors"

    def get(self, prompt: str, encoder_id: str) -> Tensor | None:
        """The cached embedding [L, d_model] float32, or None (missing or unreadable file)."""
        from safetensors import safe_open

        path = self.path(prompt, encoder_id)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {}
                if meta.get("prompt") != clean_text(prompt) or meta.get("encoder") != encoder_id:
                    return None
                return fh.get_tensor("embedding").float()
        except Exception:  # a half-written or damaged entry is a miss; `put` rewrites it
            return None

    def put(self, prompt: str, encoder_id: str, embedding: Tensor) -> Path:
        """Store embedding [L, d_model] (written atomically); returns the file."""
        from safetensors.torch import save_file

        path = self.path(prompt, encoder_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tensor = embedding.detach().to("cpu", torch.float32).contiguous()
        meta = {"prompt": clean_text(prompt), "encoder": encoder_id, "format": CACHE_FORMAT}
        save_file({"embedding": tensor}, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path
