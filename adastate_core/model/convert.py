"""Convert any DiT checkpoint the loader reads (e.g. Self-Forcing's `self_forcing_dmd.pt`) into
a ComfyUI-repack `.safetensors` file: keys `model.diffusion_model.<official name>`, one dtype,
the heads / text length / eps the shapes cannot tell stored as a `config` in the metadata.

Why: safetensors loads without unpickling, memory-maps lazily, and is the only format
ComfyUI's missing-models dialog will download. The output is created exclusively (an existing
file is never replaced): it is written to a temporary name beside it, synced, then linked to
the final name, which fails if that name exists."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch

from ..errors import CheckpointError
from .loader import FP8_DTYPES, as_dtype, read_checkpoint

PREFIX = "model.diffusion_model."


def _default_dtype(counts: Counter) -> torch.dtype:
    main = max(counts, key=counts.get)
    return main if main in (torch.float32, torch.float16, torch.bfloat16) else torch.float16


def convert_checkpoint(
    source: str | os.PathLike,
    target: str | os.PathLike,
    *,
    dtype: str | None = None,
    causal_ar: bool = False,
) -> Path:
    """Write `source` (any supported DiT format) as a ComfyUI-repack safetensors `target`.
    dtype: fp32 / fp16 / bf16 (default: the file's own dtype; fp16 for fp8 files, whose
    scales are applied). Refuses an existing `target`; -> the path written.

    The metadata `config` holds our hints (heads, text length, eps) and a `transformer`
    entry, the part ComfyUI's model detection (0.4+) copies into the Wan model it builds: the
    values its detection cannot see (heads, text width, frequency width, text length). With
    `causal_ar`, `transformer.causal_ar = true` makes ComfyUI's own loader build its
    `CausalWanModel` (ComfyUI's autoregressive Wan, SamplerARVideo); our loaders and AdaState
    from MODEL read the file the same either way."""
    from safetensors.torch import save_file

    source, target = Path(source), Path(target)
    if target.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{target}: the output must end in .safetensors")
    if os.path.lexists(target):
        raise CheckpointError(
            f"{target} already exists; it is never overwritten: choose another name or delete "
            "it first"
        )
    if source.resolve() == target.resolve():
        raise CheckpointError("the output must be another file than the input")
    ckpt = read_checkpoint(source)
    raw_dtypes = Counter(ckpt.raw.dtypes[r] for r in ckpt.names.values())
    out_dtype = as_dtype(dtype) or _default_dtype(raw_dtypes)
    if out_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise CheckpointError(f"dtype must be fp32, fp16 or bf16, not {dtype}")

    tensors: dict[str, torch.Tensor] = {}
    for key in ckpt.names:
        tensor = ckpt.read(key)
        if key in ckpt.scales:
            scale = ckpt.raw.read(ckpt.scales[key]).float().reshape(())
            tensor = tensor.float() * scale
        elif tensor.dtype in FP8_DTYPES:
            tensor = tensor.float()
        tensors[PREFIX + key] = tensor.to(out_dtype).contiguous()
    cfg = ckpt.config
    transformer = {
        "num_heads": cfg.num_heads,
        "text_dim": cfg.text_dim,
        "freq_dim": cfg.freq_dim,
        "text_len": cfg.text_len,
        "eps": cfg.eps,
    }
    if causal_ar:
        transformer["causal_ar"] = True
    hints = {"num_heads": cfg.num_heads, "text_len": cfg.text_len, "eps": cfg.eps}
    metadata = {
        "config": json.dumps({**hints, "transformer": transformer}),
        "converted_from": source.name,
        "converted_by": "adastate convert",
    }

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(tmp), metadata)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)  # atomic, and fails if the name exists meanwhile
        except FileExistsError:
            raise CheckpointError(
                f"{target} appeared while converting; it was left as it is"
            ) from None
        except OSError:  # a file system without hard links: exclusive create + copy
            with open(tmp, "rb") as src, open(target, "xb") as dst:
                while block := src.read(1 << 24):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
    finally:
        tmp.unlink(missing_ok=True)
    return target
