"""The umT5 SentencePiece tokenizer: cleaned text -> ids with EOS, truncated to 512.

Sources of the SentencePiece model: the `spiece_model` tensor inside ComfyUI's text-encoder
safetensors, a `spiece.model` file, or a tokenizer folder in the `google/umt5-xxl` layout
(which ships beside the official Wan2.1 weights).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..errors import AdaStateError, CheckpointError
from .clean import clean_text
from .formats import SPIECE_KEY

PathLike = str | os.PathLike

PAD_ID = 0
EOS_ID = 1
MAX_LENGTH = 512  # Wan's text_len: tokens per prompt including EOS
MAX_SPIECE_BYTES = 64 << 20  # umT5's spiece.model is 4.5 MB; anything huge is a model file

# Where a tokenizer folder may keep its SentencePiece model, relative to the folder given.
SPIECE_LOCATIONS = ("spiece.model", "tokenizer/spiece.model", "google/umt5-xxl/spiece.model")


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise AdaStateError(
            "standalone text encoding needs the sentencepiece package: "
            "pip install 'adastate[text]' (transformers, sentencepiece, ftfy)"
        ) from None
    return sentencepiece


def find_spiece(folder: Path) -> Path | None:
    """The SentencePiece model inside a tokenizer folder, or None."""
    for rel in SPIECE_LOCATIONS:
        if (folder / rel).is_file():
            return folder / rel
    return None


def read_spiece_bytes(source: PathLike | bytes) -> tuple[bytes, str]:
    """(SentencePiece model bytes, a description of where they came from) of a tokenizer source.

    source: raw bytes, a `spiece.model` file, a tokenizer folder (`google/umt5-xxl` layout) or a
    safetensors file that embeds the model under `spiece_model` (ComfyUI's umt5 files).
    """
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "the given SentencePiece bytes"
    path = Path(source).expanduser()
    if path.is_dir():
        found = find_spiece(path)
        if found is None:
            raise CheckpointError(
                f"tokenizer folder {path} has no spiece.model (looked for "
                f"{', '.join(SPIECE_LOCATIONS)}). Pass the google/umt5-xxl folder that ships with "
                "the Wan2.1 weights, or a ComfyUI umt5_xxl_*.safetensors file (it embeds the "
                "tokenizer)"
            )
        return found.read_bytes(), str(found)
    if not path.is_file():
        raise CheckpointError(f"tokenizer not found: {path}")
    if path.stat().st_size > MAX_SPIECE_BYTES and not path.name.endswith(".safetensors"):
        raise CheckpointError(
            f"{path} ({path.stat().st_size / 2**30:.1f} GB) is not a tokenizer: tokenizer= takes "
            "the google/umt5-xxl folder, its spiece.model, or a ComfyUI umt5_xxl_*.safetensors"
        )
    if path.name.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                if SPIECE_KEY not in fh.keys():
                    raise CheckpointError(
                        f"{path} has no embedded tokenizer (no '{SPIECE_KEY}' tensor); pass a "
                        "spiece.model file or the google/umt5-xxl tokenizer folder"
                    )
                return spiece_bytes_of(fh.get_tensor(SPIECE_KEY)), f"{path} ({SPIECE_KEY})"
        except SafetensorError as err:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: it is truncated or corrupt ({err})"
            ) from None
    return path.read_bytes(), str(path)


def spiece_bytes_of(tensor: Tensor) -> bytes:
    """The bytes of a `spiece_model` uint8 tensor."""
    return tensor.contiguous().view(torch.uint8).flatten().numpy().tobytes()


class UMT5Tokenizer:
    """umT5 SentencePiece tokenizer as Wan uses it: ids of the text, truncated, then EOS (1).

    No BOS; padding id 0. `max_length` counts the EOS, so a long prompt keeps its first 511
    pieces (transformers' `truncation=True, max_length=512` with `add_special_tokens=True`).
    """

    def __init__(self, model_proto: bytes, source: str = "", max_length: int = MAX_LENGTH):
        spm = _sentencepiece()
        self.source = source or "the given SentencePiece model"
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except Exception as err:
            raise CheckpointError(
                f"{self.source} is not a SentencePiece model ({str(err).splitlines()[0]}); the "
                "umT5 tokenizer is the spiece.model of google/umt5-xxl (also embedded in "
                "ComfyUI's umt5_xxl_*.safetensors)"
            ) from None
        pieces = self.sp.get_piece_size()
        if self.sp.eos_id() != EOS_ID and (
            pieces <= EOS_ID or self.sp.id_to_piece(EOS_ID) != "</s>"
        ):
            raise CheckpointError(
                f"{self.source} is a SentencePiece model but not umT5's: its end-of-sequence id "
                f"is {self.sp.eos_id()} (umT5: {EOS_ID} = '</s>'), vocabulary "
                f"{pieces}. Use the google/umt5-xxl tokenizer"
            )
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def ids(self, text: str, *, clean: bool = True) -> list[int]:
        """Token ids of one prompt: pieces truncated to max_length - 1, then EOS."""
        pieces = self.sp.encode(clean_text(text) if clean else text)
        return pieces[: self.max_length - 1] + [EOS_ID]

    def __call__(self, prompts: Sequence[str], *, clean: bool = True) -> tuple[Tensor, Tensor]:
        """(ids [B, L], mask [B, L]) padded with PAD_ID to the longest prompt (L <= max_length).

        mask is 1 on real tokens (EOS included) and 0 on padding.
        """
        rows = [self.ids(p, clean=clean) for p in prompts]
        length = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return ids, mask


def load_tokenizer(source: PathLike | bytes, *, max_length: int = MAX_LENGTH) -> UMT5Tokenizer:
    """The umT5 tokenizer from bytes, a spiece.model, a tokenizer folder or a ComfyUI file."""
    proto, where = read_spiece_bytes(source)
    return UMT5Tokenizer(proto, where, max_length)
