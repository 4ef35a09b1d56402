"""Standalone umT5-XXL text encoding (outside ComfyUI; inside it, use CLIPLoader type "wan").

Sources (REFERENCE.md §4), detected from the tensor names:
* ComfyUI `umt5_xxl_fp16.safetensors` / `umt5_xxl_fp8_e4m3fn_scaled.safetensors`:
  transformers T5 names, tokenizer embedded as the `spiece_model` tensor; fp8 files carry a
  `scaled_fp8` marker and per-linear `<name>.scale_weight` (weight = fp8.float() * scale).
* official Wan `models_t5_umt5-xxl-enc-bf16.pth`: Wan's own names (see
  `formats.WAN_T5_TO_HF`); the tokenizer is the `google/umt5-xxl` folder shipped beside it
  (found there automatically, or pass `tokenizer=`).
* a Hugging Face / diffusers `text_encoder/` safetensors folder (sharded with an index); the
  tokenizer is the sibling `tokenizer/` folder.

The model is transformers' `UMT5EncoderModel`, built on the meta device from a config read off
the shapes; tensors are then read, dequantised and placed one at a time, so the peak memory is
the model plus one tensor.
"""

from __future__ import annotations

import gc
import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..checkpoints import shape_problems
from ..errors import AdaStateError, CheckpointError
from ..model import formats as dit_formats
from ..model.loader import FP8_DTYPES, RawSource, as_dtype, default_compute_dtype, open_raw
from . import formats
from .cache import EmbeddingCache, file_identity
from .clean import clean_text
from .tokenizer import MAX_LENGTH, UMT5Tokenizer, find_spiece, read_spiece_bytes, spiece_bytes_of

if TYPE_CHECKING:
    from transformers import UMT5EncoderModel

PathLike = str | os.PathLike

OFFICIAL_WAN_FILE = "models_t5_umt5-xxl-enc-bf16.pth"


def _transformers():
    try:
        from transformers import UMT5Config, UMT5EncoderModel
    except ImportError:
        raise AdaStateError(
            "standalone text encoding needs transformers: pip install 'adastate[text]' "
            "(transformers>=4.45, sentencepiece, ftfy). Inside ComfyUI, use its CLIPLoader "
            '(type "wan") instead'
        ) from None
    return UMT5Config, UMT5EncoderModel


# ----------------------------------------------------------------------------------------------
# recognising a checkpoint (no tensor data read)


@dataclass
class TextCheckpoint:
    """A recognised umT5 encoder checkpoint, before any tensor is read."""

    raw: RawSource
    path: Path  # the file or folder the weights come from
    format: str  # human-readable format name
    config: dict  # UMT5Config keyword arguments
    names: dict[str, str]  # transformers name -> raw key
    scales: dict[str, str]  # transformers weight name -> raw key of its fp8 scale
    spiece_key: str | None  # raw key of the embedded SentencePiece model, if any
    tokenizer_dirs: list[Path] = field(default_factory=list)  # where to look when none is given


def _resolve_source(path: Path) -> tuple[Path, list[Path]]:
    """(weights file or safetensors folder, tokenizer folders to try when none is given)."""
    if not path.exists():
        raise CheckpointError(f"text encoder file not found: {path}")
    if path.is_file():
        return path, [path.parent / "google" / "umt5-xxl", path.parent / "tokenizer"]
    if (path / OFFICIAL_WAN_FILE).is_file():  # the Wan2.1-T2V-1.3B download folder
        return path / OFFICIAL_WAN_FILE, [path / "google" / "umt5-xxl"]
    if (path / "text_encoder").is_dir():  # a diffusers pipeline folder
        return path / "text_encoder", [path / "tokenizer"]
    if any(path.glob("*.safetensors")):
        return path, [path, path.parent / "tokenizer"]
    raise CheckpointError(
        f"{path} is a folder with no text encoder in it (no {OFFICIAL_WAN_FILE}, text_encoder/ or "
        f"*.safetensors); pass the file itself: {formats.UMT5_FILES}"
    )


def _describe_format(raw: RawSource, layout: str, scales: dict, spiece: bool) -> str:
    counts = Counter(raw.dtypes.values())
    main = max(counts, key=counts.get) if counts else torch.float32
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
        main, str(main).replace("torch.", "")
    )
    if scales or any(k in raw.shapes for k in dit_formats.MARKER_KEYS):
        dt = "fp8 scaled"
    if layout == "wan":
        return f"official Wan T5 encoder ({raw.kind}, {dt})"
    if len(raw.files) > 1:
        return f"Hugging Face / diffusers safetensors ({len(raw.files)} shards, {dt})"
    if spiece:
        return f"ComfyUI text-encoder safetensors ({dt})"
    return f"transformers-named {raw.kind} ({dt})"


def read_text_checkpoint(path: PathLike) -> TextCheckpoint:
    """Recognise a umT5 encoder checkpoint and read its config from shapes; reads no weights.

    Raises CheckpointError naming what the file is when it is not a umT5 encoder (DiT, VAE,
    CLIP, T5 v1.1 / T5-base, LoRA, ...), or when it is truncated / corrupt / incomplete.
    """
    weights, tokenizer_dirs = _resolve_source(Path(path).expanduser())
    raw = open_raw(weights)
    what = str(weights)
    stripped = {
        formats.strip_text_prefix(dit_formats.strip_name(k)): k
        for k in raw.shapes
        if k != formats.SPIECE_KEY
    }
    layout = formats.detect_layout(set(stripped))
    if layout is None:
        foreign = formats.identify_foreign(set(stripped))
        if foreign:
            raise CheckpointError(f"{what} is {foreign}.")
        sample = ", ".join(sorted(stripped)[:5]) or "(no tensors)"
        raise CheckpointError(
            f"{what} is not a umT5 text encoder (no shared.weight / encoder.block.* nor Wan's "
            f"token_embedding / blocks.*; keys start with: {sample}). Wan2.1 needs "
            f"{formats.UMT5_FILES}"
        )

    names: dict[str, str] = {}
    scales: dict[str, str] = {}
    for name, raw_key in stripped.items():
        if name in dit_formats.MARKER_KEYS or name.endswith(dit_formats.IGNORED_SUFFIXES):
            continue
        scale_suffix = next((s for s in dit_formats.SCALE_SUFFIXES if name.endswith(s)), None)
        base = name[: -len(scale_suffix)] + ".weight" if scale_suffix else name
        target = formats.to_hf_name(base, layout)
        if target is None:
            continue  # decoder of a full T5, lm_head, ...
        if scale_suffix:
            if raw.shapes[raw_key] not in ((), (1,)):
                raise CheckpointError(
                    f"{what} uses a block-wise quantisation ({raw_key} has shape "
                    f"{list(raw.shapes[raw_key])}) that AdaState does not read; use "
                    "umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors"
                )
            scales[target] = raw_key
        elif target not in names or name != "encoder.embed_tokens.weight":
            names[target] = raw_key  # `shared.weight` wins over its tied copy

    shapes = {k: raw.shapes[r] for k, r in names.items()}
    variant = formats.identify_t5_variant(set(shapes) | set(stripped), shapes)
    if variant:
        raise CheckpointError(f"{what} is {variant}.")
    needed = (
        "shared.weight",
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
    )
    missing = [k for k in needed if k not in shapes]
    if missing:
        raise CheckpointError(
            f"{what} looks like a T5-family encoder but lacks {', '.join(missing)}: it is "
            f"incomplete or not umT5. Wan2.1 needs {formats.UMT5_FILES}"
        )
    spiece = formats.SPIECE_KEY if formats.SPIECE_KEY in raw.shapes else None
    return TextCheckpoint(
        raw=raw,
        path=weights,
        format=_describe_format(raw, layout, scales, spiece is not None),
        config=formats.umt5_config_from_shapes(shapes),
        names=names,
        scales=scales,
        spiece_key=spiece,
        tokenizer_dirs=tokenizer_dirs,
    )


def _tokenizer_bytes(ckpt: TextCheckpoint, tokenizer: PathLike | bytes | None) -> tuple[bytes, str]:
    """(SentencePiece bytes, where from): given > embedded `spiece_model` > shipped folder."""
    if tokenizer is not None:
        return read_spiece_bytes(tokenizer)
    if ckpt.spiece_key is not None:
        tensor = ckpt.raw.read(ckpt.spiece_key)
        return spiece_bytes_of(tensor), f"{ckpt.path} ({ckpt.spiece_key})"
    for folder in ckpt.tokenizer_dirs:
        found = find_spiece(folder) if folder.is_dir() else None
        if found is not None:
            return read_spiece_bytes(found)
    raise CheckpointError(
        f"{ckpt.path.name} carries no tokenizer (no '{formats.SPIECE_KEY}' tensor inside) and "
        "none was given (--tokenizer / tokenizer=). The umT5 tokenizer is the google/umt5-xxl folder of the "
        f"Wan2.1-T2V-1.3B download (spiece.model; it lies beside {OFFICIAL_WAN_FILE}), or is "
        "embedded in ComfyUI's umt5_xxl_fp16.safetensors / umt5_xxl_fp8_e4m3fn_scaled.safetensors: "
        "pass one of them with --tokenizer (tokenizer= in Python)"
    )


def _compute_dtype(device: torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    compute = as_dtype(dtype) or default_compute_dtype(device)
    if compute not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"text encoder dtype must be fp32, fp16 or bf16, not {compute}")
    return compute


def encoder_identity(
    path: PathLike,
    *,
    tokenizer: PathLike | bytes | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> str:
    """What the embedding cache is keyed by: weights content, tokenizer and compute dtype.

    Reads no weights: a fingerprint of the file(s) (see `cache.file_identity`), a hash of an
    external tokenizer (an embedded one is part of the file), and the dtype the encoder would
    run in (bf16 and fp32 embeddings differ slightly).
    """
    ckpt = read_text_checkpoint(path)
    weights_id = file_identity(ckpt.raw.files)
    if tokenizer is None and ckpt.spiece_key is not None:
        tokenizer_id = "embedded"
    else:
        proto, _ = _tokenizer_bytes(ckpt, tokenizer)
        tokenizer_id = hashlib.sha256(proto).hexdigest()[:16]
    compute = _compute_dtype(torch.device(device), dtype)
    return f"umt5:{weights_id[:32]}:tokenizer:{tokenizer_id}:{str(compute).replace('torch.', '')}"


# ----------------------------------------------------------------------------------------------
# the encoder


def pad_embeddings(embeddings: Sequence[Tensor], length: int = MAX_LENGTH) -> Tensor:
    """Trimmed embeddings (each [L_i, d]) -> [B, length, d] float32, zero rows after L_i.

    This is the context the DiT wants (REFERENCE.md §1: zero-padded to exactly 512 rows).
    """
    if not embeddings:
        raise ValueError("no embeddings to pad")
    d = embeddings[0].shape[-1]
    out = torch.zeros(len(embeddings), length, d, dtype=torch.float32)
    for i, emb in enumerate(embeddings):
        if emb.shape[0] > length:
            raise ValueError(f"embedding {i} has {emb.shape[0]} rows, more than {length}")
        out[i, : emb.shape[0]] = emb.float().cpu()
    return out


@dataclass(eq=False)
class TextEncoder:
    """A loaded umT5 encoder and its tokenizer; `encode` turns prompts into text embeddings."""

    model: UMT5EncoderModel
    tokenizer: UMT5Tokenizer
    source: str = ""
    format: str = ""

    @property
    def d_model(self) -> int:
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    @torch.inference_mode()
    def encode(self, prompts: Sequence[str], *, batch_size: int = 8) -> list[Tensor]:
        """Per prompt its hidden states trimmed to the real tokens: [L_i, d_model] float32, CPU.

        Each prompt is cleaned (`clean_text`), tokenised (<= 511 pieces + EOS, so L_i <= 512
        and L_i counts the EOS) and encoded with padding masked out, `batch_size` at a time.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        out: list[Tensor] = []
        for start in range(0, len(prompts), batch_size):
            ids, mask = self.tokenizer(prompts[start : start + batch_size])
            hidden = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).last_hidden_state
            for row, n in zip(hidden, mask.sum(dim=1).tolist()):
                out.append(row[:n].to("cpu", torch.float32, copy=True))
        return out

    def encode_padded(self, prompts: Sequence[str], *, length: int = MAX_LENGTH) -> Tensor:
        """[B, length, d_model] float32: `encode` rows, zero rows after each prompt's length."""
        return pad_embeddings(self.encode(prompts), length)


def load_text_encoder(
    path: PathLike,
    *,
    tokenizer: PathLike | bytes | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> TextEncoder:
    """Load a umT5 encoder (ComfyUI safetensors fp16/bf16/fp8-scaled, official Wan .pth, or a
    Hugging Face folder) and its tokenizer.

    tokenizer: a tokenizer folder (`google/umt5-xxl` layout), a `spiece.model`, a ComfyUI
        umt5 safetensors (embeds one) or the model bytes; default: the one embedded in the file,
        else a `google/umt5-xxl` folder beside it.
    dtype: compute and weight dtype (fp32 / bf16 / fp16); default bf16 on CUDA, fp32 on CPU.
        fp8 files are dequantised to it. umT5-XXL needs about 11.4 GB in bf16, 22.7 GB in fp32.
    """
    device = torch.device(device)
    compute = _compute_dtype(device, dtype)
    ckpt = read_text_checkpoint(path)
    proto, where = _tokenizer_bytes(ckpt, tokenizer)
    tok = UMT5Tokenizer(proto, where)
    if tok.vocab_size > ckpt.config["vocab_size"]:
        raise CheckpointError(
            f"the tokenizer {where} has {tok.vocab_size} pieces but the encoder {ckpt.path.name} "
            f"embeds only {ckpt.config['vocab_size']} tokens: they do not belong together. Use the "
            "google/umt5-xxl tokenizer with a umT5-XXL encoder"
        )
    model = _build_model(ckpt, device, compute)
    return TextEncoder(model, tok, str(ckpt.path), ckpt.format)


def _build_model(ckpt: TextCheckpoint, device: torch.device, dtype: torch.dtype):
    """UMT5EncoderModel on the meta device, checked against the file, then filled tensor by
    tensor (fp8 dequantised with its scale) on `device` in `dtype`."""
    UMT5Config, UMT5EncoderModel = _transformers()
    with torch.device("meta"):
        model = UMT5EncoderModel(UMT5Config(**ckpt.config))
    tied = "encoder.embed_tokens.weight"
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != tied}
    shapes = {k: tuple(ckpt.raw.shapes[r]) for k, r in ckpt.names.items()}
    problems = shape_problems(expected, shapes, check_extra=False, show=4)
    if problems:
        raise CheckpointError(
            f"{ckpt.path} does not match the umT5 encoder its shapes describe: "
            + "; ".join(problems)
            + f". The file is incomplete or a merge; Wan2.1 needs {formats.UMT5_FILES}"
        )

    state: dict[str, Tensor] = {}
    for name in expected:
        tensor = ckpt.raw.read(ckpt.names[name]).to(device)
        if name in ckpt.scales:  # dequantise on the device: weight = fp8.float() * scale
            scale = ckpt.raw.read(ckpt.scales[name]).to(device).float().reshape(())
            tensor = tensor.float() * scale
        elif tensor.dtype in FP8_DTYPES:
            tensor = tensor.float()
        state[name] = tensor.to(dtype)
    state[tied] = state["shared.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.encoder.embed_tokens.weight = model.shared.weight
    return model.eval().requires_grad_(False)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def encode_prompts(
    prompts: Sequence[str],
    encoder_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    tokenizer: PathLike | bytes | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> list[Tensor]:
    """Embeddings of prompts ([L_i, d_model] float32 each), through an on-disk cache.

    The encoder is loaded only if some (cleaned) prompt is not in `cache_dir`; the missing ones
    are encoded in one batch, stored, and the encoder is freed before returning. A prompt seen
    before with the same encoder file, tokenizer and dtype never loads the encoder.
    Use `pad_embeddings` for the DiT's [B, 512, d] context.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        return []
    device = torch.device(device)
    cleaned = [clean_text(p) for p in prompts]
    unique = dict(zip(cleaned, prompts))  # cleaned -> a raw prompt (the cache cleans it again)
    found: dict[str, Tensor] = {}
    cache = None
    if cache_dir is not None:
        cache = EmbeddingCache(cache_dir)
        encoder_id = encoder_identity(encoder_path, tokenizer=tokenizer, device=device, dtype=dtype)
        for prompt, raw in unique.items():
            hit = cache.get(raw, encoder_id)
            if hit is not None and torch.isfinite(hit).all():
                found[prompt] = hit
    todo = {c: p for c, p in unique.items() if c not in found}
    if todo:
        encoder = load_text_encoder(encoder_path, tokenizer=tokenizer, device=device, dtype=dtype)
        try:
            embeddings = encoder.encode(list(todo.values()))
        finally:
            del encoder
            _release(device)
        for (prompt, raw), emb in zip(todo.items(), embeddings):
            if not torch.isfinite(emb).all():
                raise CheckpointError(
                    f"the text encoder {Path(encoder_path).name} produced NaN or inf values for "
                    f"the prompt {raw[:60]!r}: its weights are broken; download it again"
                )
            found[prompt] = emb
            if cache is not None:
                try:
                    cache.put(raw, encoder_id, emb)
                except OSError as err:  # the cache only saves time: never fail a run over it
                    warnings.warn(
                        f"could not store the prompt embedding in {cache.directory} "
                        f"({err.strerror or err}); the prompt will be encoded again next time",
                        stacklevel=2,
                    )
    return [found[c].clone() for c in cleaned]
