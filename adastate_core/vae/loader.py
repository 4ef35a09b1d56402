"""Load the Wan2.1 VAE decoder from the files people have.

Formats (detected from key names): ComfyUI `wan_2.1_vae.safetensors` and the official
`Wan2.1_VAE.pth` (official names, the .pth read with `weights_only=True`, the state dict at the
top level or under 'state_dict'), a diffusers `vae/` folder or its
`diffusion_pytorch_model.safetensors` (AutoencoderKLWan names, mapped by `formats`), or an
in-memory state dict. `load_vae` reads only `decoder.*` and `conv2.*`, `load_vae_encoder` only
`encoder.*` and `conv1.*`.

The architecture (base dim, z dim) is read from shapes and checked against a decoder built on
the meta device before any tensor is read; tensors are then read one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoints import shape_problems
from ..errors import CheckpointError
from ..model.loader import PathLike, RawSource, as_dtype, default_compute_dtype, open_raw
from . import formats
from .decoder import WanVAEDecoder
from .encoder import WanVAEEncoder


@dataclass
class VAECheckpoint:
    """A recognised Wan2.1 VAE checkpoint, before any tensor is read."""

    raw: RawSource
    format: str
    dim: int
    z_dim: int
    names: dict[str, str]  # official decoder key -> raw key
    encoder_names: dict[str, str]  # official encoder key -> raw key (may be empty)

    def read(self, key: str) -> Tensor:
        return self.raw.read(self.names.get(key) or self.encoder_names[key])


def _resolve_path(source: PathLike) -> Path:
    """The weights file a path stands for: a file, a diffusers `vae/` folder or its parent."""
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"VAE file not found: {path}")
    if not path.is_dir():
        return path
    folder = path / "vae" if (path / "vae").is_dir() else path
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files[:4]) or "none"
        raise CheckpointError(
            f"{folder} should hold exactly one VAE weights file (found: {found}); pass the "
            "file itself, e.g. wan_2.1_vae.safetensors"
        )
    return files[0]


def _describe(raw: RawSource, diffusers: bool) -> str:
    dtypes = {raw.dtypes[k] for k in raw.dtypes}
    dt = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
    if diffusers:
        return f"diffusers AutoencoderKLWan ({dt})"
    if raw.kind == "pickle":
        return f"official Wan2.1 VAE .pth ({dt})"
    if raw.kind == "state_dict":
        return f"in-memory state dict ({dt})"
    return f"Wan2.1 VAE safetensors ({dt})"


def read_vae_checkpoint(
    source: PathLike | Mapping[str, Tensor], part: str = "decoder"
) -> VAECheckpoint:
    """Recognise a Wan2.1 VAE and check `part` ("decoder" or "encoder": the one that will be
    loaded; a file may lack the other) on the meta device; reads no tensor data."""
    what = "the given state dict" if isinstance(source, Mapping) else str(source)
    raw = open_raw(source if isinstance(source, Mapping) else _resolve_path(source))
    stripped = {formats.strip_name(k): k for k in raw.shapes}
    names_set = set(stripped)
    shapes = {n: raw.shapes[k] for n, k in stripped.items()}

    foreign = formats.identify_foreign(names_set)
    if foreign:
        raise CheckpointError(f"{what} is {foreign}.")
    diffusers = not formats.is_official_wan(names_set) and formats.is_diffusers_wan(
        names_set, shapes
    )
    if not diffusers and not formats.is_official_wan(names_set):
        if formats.looks_like_vae(names_set):
            raise CheckpointError(f"{what} is {formats.OTHER_VAE}.")
        sample = ", ".join(sorted(names_set)[:5])
        raise CheckpointError(
            f"{what} is not a Wan2.1 VAE (no decoder.* tensors; keys start with: {sample}). "
            f"AdaState needs {formats.WAN21_VAE_FILE}"
        )

    names: dict[str, str] = {}
    encoder_names: dict[str, str] = {}
    res_blocks = formats.diffusers_num_res_blocks(names_set) if diffusers else 2
    for name, raw_key in stripped.items():
        official = formats.diffusers_to_official(name, res_blocks) if diffusers else name
        if official is not None and official.startswith(formats.DECODE_PREFIXES):
            names[official] = raw_key
        elif official is not None and official.startswith(formats.ENCODE_PREFIXES):
            encoder_names[official] = raw_key
    dec_shapes = {k: tuple(raw.shapes[r]) for k, r in names.items()}
    if part == "encoder":
        dim, z_dim = _check_encoder(encoder_names, raw, what)
        return VAECheckpoint(raw, _describe(raw, diffusers), dim, z_dim, names, encoder_names)

    z_dim = _z_dim(dec_shapes)
    if z_dim == 48:
        raise CheckpointError(f"{what} is {formats.WAN22_VAE}.")
    gamma = dec_shapes.get("decoder.head.0.gamma")
    if z_dim is None or gamma is None:
        raise CheckpointError(
            f"{what} is an incomplete Wan VAE: decoder.conv1 / decoder.head are missing (an "
            f"encoder-only or truncated export?). AdaState needs {formats.WAN21_VAE_FILE}"
        )
    if z_dim != 16:
        raise CheckpointError(
            f"{what} is a Wan-style VAE with a {z_dim}-channel latent; AdaState needs "
            f"{formats.WAN21_VAE_FILE} (16 channels)"
        )
    dim = int(gamma[0])
    _check_against_meta(dim, z_dim, dec_shapes, what)
    return VAECheckpoint(raw, _describe(raw, diffusers), dim, z_dim, names, encoder_names)


def _check_encoder(names: Mapping[str, str], raw: RawSource, what: str) -> tuple[int, int]:
    """(base dim, z dim) of the file's encoder, checked against an encoder on meta."""
    shapes = {k: tuple(raw.shapes[r]) for k, r in names.items()}
    first, quant = shapes.get("encoder.conv1.weight"), shapes.get("conv1.weight")
    if not names or first is None or quant is None:
        raise CheckpointError(
            f"{what} has no Wan2.1 VAE encoder weights (encoder.conv1 / conv1 missing: a "
            f"decoder-only export?); encoding images and videos needs the full "
            f"{formats.WAN21_VAE_FILE}"
        )
    dim, z_dim = int(first[0]), int(quant[0]) // 2
    if z_dim == 48:
        raise CheckpointError(f"{what} is {formats.WAN22_VAE}.")
    if z_dim != 16:
        raise CheckpointError(
            f"{what} is a Wan-style VAE with a {z_dim}-channel latent; AdaState needs "
            f"{formats.WAN21_VAE_FILE} (16 channels)"
        )
    expected = {
        k: tuple(v.shape) for k, v in WanVAEEncoder(dim, z_dim, device="meta").state_dict().items()
    }
    problems = shape_problems(expected, shapes)
    if problems:
        raise CheckpointError(
            f"{what} does not match the Wan2.1 VAE encoder it looks like (base dim {dim}): "
            + "; ".join(problems)
            + ". The file is incomplete or from another model; download "
            + formats.WAN21_VAE_FILE
            + " again"
        )
    return dim, z_dim


def _z_dim(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    for key, axis in (("decoder.conv1.weight", 1), ("conv2.weight", 0)):
        if key in shapes and len(shapes[key]) > axis:
            return int(shapes[key][axis])
    return None


def _check_against_meta(
    dim: int, z_dim: int, shapes: dict[str, tuple[int, ...]], what: str
) -> None:
    """Compare the file's decoder tensors with a decoder of the inferred size on meta."""
    model = WanVAEDecoder(dim, z_dim, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = shape_problems(expected, shapes)
    if problems:
        raise CheckpointError(
            f"{what} does not match the Wan2.1 VAE decoder it looks like (base dim {dim}): "
            + "; ".join(problems)
            + ". The file is incomplete or from another model; download "
            + formats.WAN21_VAE_FILE
            + " again"
        )


def load_vae(
    source: PathLike | Mapping[str, Tensor],
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> WanVAEDecoder:
    """Load the Wan2.1 VAE decoder (any base dim) from a file, diffusers folder or state dict.

    dtype: fp32, bf16 or fp16 for weights and compute; default bf16 on CUDA, fp32 on CPU.
    """
    device = torch.device(device)
    compute = as_dtype(dtype) or default_compute_dtype(device)
    if compute not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"VAE dtype must be fp32, fp16 or bf16, not {compute}")
    ckpt = read_vae_checkpoint(source)
    model = WanVAEDecoder(ckpt.dim, ckpt.z_dim, dtype=compute, device="meta")
    state = {key: ckpt.read(key).to(device=device, dtype=compute) for key in ckpt.names}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    model.checkpoint_format = ckpt.format
    return model


def load_vae_encoder(
    source: PathLike | Mapping[str, Tensor],
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
) -> WanVAEEncoder:
    """Load the Wan2.1 VAE encoder (any base dim) from the same files as `load_vae` (a file
    with only the encoder loads too).

    dtype: fp32, bf16 or fp16 for weights and compute; default bf16 on CUDA, fp32 on CPU.
    """
    device = torch.device(device)
    compute = as_dtype(dtype) or default_compute_dtype(device)
    if compute not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"VAE dtype must be fp32, fp16 or bf16, not {compute}")
    ckpt = read_vae_checkpoint(source, part="encoder")
    model = WanVAEEncoder(ckpt.dim, ckpt.z_dim, dtype=compute, device="meta")
    state = {k: ckpt.read(k).to(device=device, dtype=compute) for k in ckpt.encoder_names}
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    model.checkpoint_format = ckpt.format
    return model
