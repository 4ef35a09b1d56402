"""Training prompts: the user's own list (nothing is shipped or downloaded), embedded once.

Prompt order is a pure function of (seed, epoch): sample j of the generator (phase 0) or critic
(phase 1) batch of iteration i takes position p = (2 i + phase) B + j of an endless sequence
of per-epoch permutations. So the data a run sees does not depend on the number of processes,
and a resume needs only the iteration. Only the prompts a run will use are encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import AdaStateError
from .config import DATA, TrainConfig, derive_seed

EMBEDDINGS_FORMAT = "adastate-train-embeddings-v1"


class DataError(AdaStateError, ValueError):
    """Unusable prompts or embeddings."""


def read_prompt_file(path: str | os.PathLike) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"prompt file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not a UTF-8 text file (one prompt per line)") from None
    prompts = [ln.strip() for ln in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise DataError(f"{path} holds no prompts (one prompt per line; '#' lines are comments)")
    return prompts


def position_index(seed: int, count: int, position: int) -> int:
    """The prompt index at `position` of the endless sequence of per-epoch permutations."""
    epoch, offset = divmod(position, count)
    rng = np.random.default_rng(derive_seed(seed, DATA, epoch))
    return int(rng.permutation(count)[offset])


def used_indices(config: TrainConfig, count: int, start: int = 0) -> list[int]:
    """Prompt indices iterations start .. iterations-1 will read (in first-use order)."""
    seen: dict[int, None] = {}
    b = config.batch
    for i in range(start, config.iterations):
        phases = (0, 1) if i % config.gen_every == 0 else (1,)
        for phase in phases:
            for j in range(b):
                seen.setdefault(position_index(config.seed, count, (2 * i + phase) * b + j))
        if len(seen) == count:
            break
    return list(seen)


@dataclass
class PromptData:
    """prompts: the list; embeddings: index -> [L, text_dim] float32 rows (the ones the run
    uses); negative: [L, text_dim] rows of the negative prompt (the teacher's uncond)."""

    prompts: list[str]
    embeddings: dict[int, Tensor]
    negative: Tensor
    seed: int

    def index(self, iteration: int, phase: int, sample: int, batch: int) -> int:
        return position_index(
            self.seed, len(self.prompts), (2 * iteration + phase) * batch + sample
        )

    def rows(self, index: int) -> Tensor:
        try:
            return self.embeddings[index]
        except KeyError:
            raise DataError(
                f"prompt {index} ({self.prompts[index][:60]!r}) has no embedding; the run was "
                "prepared for fewer iterations"
            ) from None

    @property
    def text_dim(self) -> int:
        return self.negative.shape[-1]


def batch_rows(rows: list[Tensor]) -> Tensor:
    """Stack [L_i, d] rows into [B, max L, d], zero-padded (the DiT pads with zeros anyway)."""
    length = max(r.shape[0] for r in rows)
    out = torch.zeros(len(rows), length, rows[0].shape[-1], dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r.float()
    return out


def save_embeddings(
    path: str | os.PathLike, prompts: list[str], embeddings: dict[int, Tensor], negative: Tensor
) -> Path:
    """Write a `--embeddings` file: tensors prompt_NNNNNN [L, d] and negative, prompts in the
    metadata. Created exclusively."""
    from safetensors.torch import save_file

    path = Path(path)
    if os.path.lexists(path):
        raise DataError(f"{path} exists; it is never overwritten: choose another name")
    tensors = {f"prompt_{i:06d}": e.float().contiguous() for i, e in embeddings.items()}
    tensors["negative"] = negative.float().contiguous()
    meta = {"format": EMBEDDINGS_FORMAT, "prompts": json.dumps(prompts, ensure_ascii=False)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(tmp), meta)
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_embeddings(path: str | os.PathLike) -> tuple[list[str], dict[int, Tensor], Tensor]:
    """Read a `--embeddings` file (see `save_embeddings`)."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"embeddings file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != EMBEDDINGS_FORMAT or "negative" not in fh.keys():
                raise DataError(
                    f"{path} is not an AdaState training embeddings file (made by "
                    "`adastate train --save-embeddings` or `train.data.save_embeddings`)"
                )
            prompts = json.loads(meta["prompts"])
            embeddings = {
                int(k.split("_")[1]): fh.get_tensor(k).float()
                for k in fh.keys()
                if k.startswith("prompt_")
            }
            negative = fh.get_tensor("negative").float()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path} could not be read as safetensors ({err})") from None
    if not prompts or not embeddings:
        raise DataError(f"{path} holds no prompt embeddings")
    for key, emb in [*embeddings.items(), ("negative", negative)]:
        if emb.ndim != 2 or emb.shape[-1] != negative.shape[-1] or not torch.isfinite(emb).all():
            raise DataError(f"{path}: embedding {key} is not finite [tokens, width] rows")
    return prompts, embeddings, negative
