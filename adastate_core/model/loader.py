"""Load a causal Wan2.1 DiT from any checkpoint format artists and researchers have.

Formats (detected, REFERENCE.md §2): ComfyUI repack safetensors (optionally prefixed
`model.diffusion_model.`, fp32/fp16/bf16/fp8, fp8 with `scale_weight`), official safetensors
(single or sharded with an index), diffusers `transformer/` naming, and Self-Forcing-family
`.pt` pickles (read with `weights_only=True`; `generator_ema` else `generator`).

Loading is lazy: the architecture is read from tensor *shapes*, checked against a model built on
the meta device, and only then are tensors read one at a time, converted and placed, so the
peak memory is the model plus one tensor.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..checkpoints import shape_problems
from ..errors import CheckpointError
from . import formats
from .config import WanConfig
from .dit import CausalWanDiT

PathLike = str | os.PathLike

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
DTYPE_NAMES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8": torch.float8_e4m3fn,
}


def as_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value in ("default", "auto", ""):
        return None
    try:
        return DTYPE_NAMES[value]
    except KeyError:
        raise ValueError(f"unknown dtype {value!r}; use one of {', '.join(DTYPE_NAMES)}") from None


# ----------------------------------------------------------------------------------------------
# raw tensor sources


@dataclass
class RawSource:
    """The tensors of a checkpoint as stored, readable one at a time."""

    kind: str  # "safetensors" | "pickle" | "state_dict"
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    read: Callable[[str], Tensor]
    files: list[Path] = field(default_factory=list)
    container: str = ""  # e.g. "generator_ema" for Self-Forcing pickles
    hints: dict = field(default_factory=dict)  # num_heads / text_len / eps found beside the weights


HINT_KEYS = {  # our / official config names, then diffusers config.json names
    "num_heads": "num_heads",
    "num_attention_heads": "num_heads",
    "text_len": "text_len",
    "eps": "eps",
}


def _hints(config: object) -> dict:
    """Config values the shapes cannot tell, from safetensors metadata or a config.json."""
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return {}
    if not isinstance(config, dict):
        return {}
    return {HINT_KEYS[k]: v for k, v in config.items() if k in HINT_KEYS and v is not None}


def _safetensors_files(path: Path) -> list[Path]:
    """The safetensors file(s) a path stands for (file, sharded index, or model folder)."""
    if path.is_dir():
        for sub in ("transformer", ""):
            folder = path / sub if sub else path
            index = sorted(folder.glob("*.safetensors.index.json"))
            if index:
                return _safetensors_files(index[0])
            files = sorted(folder.glob("*.safetensors"))
            if len(files) == 1:
                return files
            if len(files) > 1:
                raise CheckpointError(
                    f"{folder} holds several .safetensors files ({', '.join(f.name for f in files[:4])}"
                    "...) and no *.safetensors.index.json; pass the model file itself"
                )
        raise CheckpointError(
            f"{path} is a folder with no .safetensors model in it (looked in {path} and "
            f"{path / 'transformer'}); pass the DiT file itself"
        )
    if path.name.endswith(".index.json"):
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors index ({err})") from None
        return [path.parent / name for name in sorted(set(weight_map.values()))]
    return [path]


def _open_safetensors(path: Path) -> RawSource:
    from safetensors import SafetensorError, safe_open

    files = _safetensors_files(path)
    handles, shapes, dtypes, owner, hints = [], {}, {}, {}, {}
    config_json = files[0].parent / "config.json"
    if config_json.is_file():
        try:
            hints.update(_hints(json.loads(config_json.read_text())))
        except (OSError, ValueError):
            pass
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"shard {file} listed in the index is missing")
        try:
            handle = safe_open(str(file), framework="pt", device="cpu")
            hints.update(_hints((handle.metadata() or {}).get("config")))
            for key in handle.keys():
                sl = handle.get_slice(key)
                shapes[key] = tuple(sl.get_shape())
                dtypes[key] = _ST_DTYPES.get(sl.get_dtype(), torch.float32)
                owner[key] = handle
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{file} is not a valid safetensors file: it is truncated or corrupt ({err}). "
                "Download it again (compare its size with the source)"
            ) from None
        handles.append(handle)

    def read(key: str) -> Tensor:
        try:
            return owner[key].get_tensor(key)
        except Exception as err:
            raise CheckpointError(
                f"could not read tensor {key!r}: the file is corrupt ({err})"
            ) from None

    return RawSource("safetensors", shapes, dtypes, read, files, hints=hints)


CONTAINER_KEYS = ("generator_ema", "generator", "state_dict", "model", "module", "ema")


def _open_pickle(path: Path) -> RawSource:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path.name} is a PyTorch pickle that torch.load(weights_only=True) refuses: it "
            "stores Python objects besides tensors, and AdaState never runs code from a model "
            f"file. If you trust it, re-save its weights as safetensors and load that. ({_first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint: it is truncated or corrupt "
            f"({_first_line(err)}). Download it again"
        ) from None
    return _from_mapping(obj, "pickle", [path], path.name)


def _from_mapping(obj: object, kind: str, files: list[Path], what: str) -> RawSource:
    container = ""
    hints = _hints(obj.get("config")) if isinstance(obj, Mapping) else {}
    if isinstance(obj, Mapping):
        for key in CONTAINER_KEYS:  # Self-Forcing: prefer the EMA generator
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                obj, container = inner, key
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, Tensor) for v in obj.values()):
        found = (
            ", ".join(map(str, list(obj)[:6])) if isinstance(obj, Mapping) else type(obj).__name__
        )
        raise CheckpointError(
            f"{what} holds no model weights AdaState understands (top level: {found}); expected a "
            "state dict, or a Self-Forcing checkpoint with 'generator_ema' / 'generator'"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    return RawSource(
        kind,
        {k: tuple(v.shape) for k, v in tensors.items()},
        {k: v.dtype for k, v in tensors.items()},
        tensors.__getitem__,
        files,
        container,
        hints,
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def sniff(path: Path) -> str:
    """What a model file holds, from its first bytes (not its name): 'safetensors' (8-byte
    header length, then '{'), 'pickle' (zip or a pickle opcode), or 'unknown'."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def open_raw(source: PathLike | Mapping[str, Tensor]) -> RawSource:
    """Open a checkpoint file/folder, or wrap an in-memory state dict, without reading tensors.
    The format is read from the file's content (a safetensors file named .pt loads too)."""
    if isinstance(source, Mapping):
        return _from_mapping(source, "state_dict", [], "the given state dict")
    path = Path(source).expanduser()
    if not path.exists():
        if path.is_symlink():
            raise CheckpointError(f"model file not found: {path} is a broken symbolic link")
        raise CheckpointError(f"model file not found: {path}")
    if path.is_dir() or path.name.endswith(".index.json"):
        return _open_safetensors(path)
    try:
        size = path.stat().st_size
        kind = sniff(path)
    except PermissionError:
        raise CheckpointError(
            f"{path} cannot be read: permission denied; fix its permissions (chmod a+r)"
        ) from None
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read: {err.strerror or err}") from None
    if size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): an interrupted download? Download it again"
        )
    if kind == "pickle":
        return _open_pickle(path)
    if kind == "safetensors" or path.suffix not in (".pt", ".pth", ".ckpt", ".bin"):
        return _open_safetensors(path)
    raise CheckpointError(
        f"{path} is neither a safetensors file nor a PyTorch checkpoint (its first bytes are "
        f"{_head_text(path)}): it is damaged or not a model; download it again"
    )


def _head_text(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(8).hex(" ")


# ----------------------------------------------------------------------------------------------
# canonical view: recognise, rename, validate


@dataclass
class Checkpoint:
    """A recognised Wan2.1 T2V DiT checkpoint, before any tensor is read."""

    raw: RawSource
    format: str  # human-readable format name
    config: WanConfig
    names: dict[str, str]  # canonical key -> raw key
    scales: dict[str, str]  # canonical weight key -> raw key of its fp8 scale

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self.raw.shapes[r] for k, r in self.names.items()}

    def stored_dtypes(self) -> Counter:
        """Parameter count per on-disk dtype."""
        counts: Counter = Counter()
        for raw in self.names.values():
            n = 1
            for s in self.raw.shapes[raw]:
                n *= s
            counts[str(self.raw.dtypes[raw]).replace("torch.", "")] += n
        return counts

    def num_params(self) -> int:
        return sum(self.stored_dtypes().values())

    def read(self, key: str) -> Tensor:
        """Canonical tensor with any fp8 scale applied lazily by the caller (see `load_dit`)."""
        return self.raw.read(self.names[key])


def _describe_format(raw: RawSource, diffusers: bool, prefixed: bool) -> str:
    counts = Counter(raw.dtypes.values())
    main = max(counts, key=counts.get) if counts else torch.float32
    dt = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(
        main, str(main).replace("torch.", "")
    )
    if any("scale_weight" in k for k in raw.shapes) or any(
        k in raw.shapes for k in formats.MARKER_KEYS
    ):
        dt = "fp8 scaled"
    if raw.kind == "pickle":
        where = f" ({raw.container})" if raw.container else ""
        return f"Self-Forcing-family PyTorch checkpoint{where}, {dt}"
    if diffusers:
        return f"diffusers WanTransformer3DModel, {dt}"
    if raw.kind == "state_dict":
        return f"in-memory state dict, {dt}"
    if prefixed or main != torch.float32:
        return f"ComfyUI repack safetensors, {dt}"
    return f"official Wan2.1 safetensors, {dt}"


def read_checkpoint(
    source: PathLike | Mapping[str, Tensor],
    *,
    text_len: int | None = None,
    eps: float | None = None,
    num_heads: int | None = None,
) -> Checkpoint:
    """Recognise a DiT checkpoint and check it on the meta device; reads no tensor data.

    text_len, eps and num_heads cannot be read from shapes: given values win, then a `config`
    found with the weights (safetensors metadata, diffusers config.json), then Wan2.1's
    (512, 1e-6, dim / 128).
    """
    raw = open_raw(source)
    text_len = text_len or int(raw.hints.get("text_len", 512))
    eps = eps or float(raw.hints.get("eps", 1e-6))
    num_heads = num_heads or (int(raw.hints["num_heads"]) if "num_heads" in raw.hints else None)
    what = str(source) if not isinstance(source, Mapping) else "the given state dict"
    stripped = {formats.strip_name(k): k for k in raw.shapes}
    prefixed = any(k.startswith(("model.diffusion_model.", "diffusion_model.")) for k in raw.shapes)
    names_set = set(stripped)
    foreign = formats.identify_foreign(names_set)
    if foreign:
        raise CheckpointError(f"{what} is {foreign}.")
    diffusers = formats.is_diffusers(names_set)
    names: dict[str, str] = {}
    scales: dict[str, str] = {}
    for name, raw_key in stripped.items():
        if name in formats.MARKER_KEYS or name.endswith(formats.IGNORED_SUFFIXES):
            continue
        canon = formats.diffusers_to_canonical(name) if diffusers else name
        scale_suffix = next((s for s in formats.SCALE_SUFFIXES if canon.endswith(s)), None)
        if scale_suffix:
            if raw.shapes[raw_key] not in ((), (1,)):
                raise CheckpointError(
                    f"{what} uses a block-wise quantisation ({raw_key} has shape "
                    f"{list(raw.shapes[raw_key])}) that AdaState does not read; use the fp16, "
                    "bf16 or fp8_e4m3fn_scaled file instead"
                )
            scales[canon[: -len(scale_suffix)] + ".weight"] = raw_key
        else:
            names[canon] = raw_key

    shapes = {k: raw.shapes[r] for k, r in names.items()}
    integer = sorted(k for k, r in names.items() if not raw.dtypes[r].is_floating_point)
    if integer and "head.modulation" in shapes:
        raise CheckpointError(
            f"{what} stores weights as {str(raw.dtypes[names[integer[0]]]).replace('torch.', '')} "
            f"({integer[0]}{' and others' if len(integer) > 1 else ''}): a model's weights are "
            "floating point (fp32/fp16/bf16/fp8); this file is broken or another kind of file"
        )
    if "head.modulation" not in shapes or "patch_embedding.weight" not in shapes:
        sample = ", ".join(sorted(names_set)[:5])
        raise CheckpointError(
            f"{what} is not a Wan2.1 DiT (no head.modulation / patch_embedding; keys start with: "
            f"{sample}). AdaState needs {formats.WAN_T2V_FILE}"
        )
    variant = formats.identify_wan_variant(shapes)
    if variant:
        raise CheckpointError(f"{what} is {variant}.")
    config = WanConfig.from_shapes(shapes, text_len=text_len, eps=eps, num_heads=num_heads)
    _check_against_meta(config, shapes, scales, what)
    fmt = _describe_format(raw, diffusers, prefixed)
    return Checkpoint(raw, fmt, config, names, scales)


def _check_against_meta(
    config: WanConfig, shapes: dict[str, tuple[int, ...]], scales: dict[str, str], what: str
) -> None:
    """Compare the file with a model of the inferred size built on the meta device."""
    with torch.device("meta"):
        model = CausalWanDiT(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = shape_problems(expected, {**shapes, **{k: () for k in set(scales) - set(expected)}})
    if problems:
        raise CheckpointError(
            f"{what} does not match the Wan2.1 T2V architecture it looks like "
            f"({config.size_name()}): "
            + "; ".join(problems)
            + ". The file is incomplete, from another model, or a merge; AdaState needs "
            + formats.WAN_T2V_FILE
        )


# ----------------------------------------------------------------------------------------------
# loading


def default_compute_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_dit(
    source: PathLike | Mapping[str, Tensor],
    *,
    dtype: str | torch.dtype | None = None,
    weight_dtype: str | torch.dtype | None = None,
    precise_dtype: str | torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attention: str = "sdpa",
    text_len: int | None = None,
    eps: float | None = None,
    num_heads: int | None = None,
) -> CausalWanDiT:
    """Load a causal Wan2.1 T2V DiT (any size) from a file, folder or state dict.

    dtype: compute dtype of linears/attention (fp32, bf16, fp16); default bf16 on CUDA, fp32 on
        CPU. weight_dtype: storage of the linear weights (same, or fp8_e4m3fn); default: the
        file's fp8 if it is an fp8 file, else `dtype`. precise_dtype: residual stream,
        modulation, norms, time embedding and head (fp32 as in the official code).
    text_len / eps / num_heads cannot be read from shapes (see `read_checkpoint`); the defaults
    are Wan2.1's (512, 1e-6, dim / 128).

    The weights must be a causal few-step checkpoint (Self-Forcing family or AdaState); the
    base Wan2.1 T2V weights load (same shapes) but are not distilled for 4-step chunk-wise
    sampling and give poor video.
    """
    device = torch.device(device)
    ckpt = read_checkpoint(source, text_len=text_len, eps=eps, num_heads=num_heads)
    compute = as_dtype(dtype) or default_compute_dtype(device)
    precise = as_dtype(precise_dtype)
    if compute not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"compute dtype must be fp32, fp16 or bf16, not {compute}")
    file_is_fp8 = any(ckpt.raw.dtypes[r] in FP8_DTYPES for r in ckpt.names.values())
    storage = as_dtype(weight_dtype) or (torch.float8_e4m3fn if file_is_fp8 else compute)

    with torch.device("meta"):
        model = CausalWanDiT(
            ckpt.config, compute_dtype=compute, precise_dtype=precise, attention=attention
        )
    state: dict[str, Tensor] = {}
    kept_scales: dict[str, Tensor] = {}
    for key in ckpt.names:
        tensor = ckpt.read(key)
        scale = ckpt.raw.read(ckpt.scales[key]).float().reshape(()) if key in ckpt.scales else None
        is_compute = formats.COMPUTE_WEIGHT.match(key) is not None
        target = (storage if key.endswith(".weight") else compute) if is_compute else precise
        if target in FP8_DTYPES:
            if scale is not None and tensor.dtype == target:
                kept_scales[key] = scale.to(device)  # keep fp8 exactly as stored, scale at use
                scale = None
            elif scale is not None:
                tensor = tensor.float() * scale
                scale = None
        elif scale is not None:
            tensor = tensor.to(torch.float32) * scale
        state[key] = tensor.to(device=device, dtype=target)
    model.load_state_dict(state, strict=True, assign=True)
    for key, scale in kept_scales.items():
        module = model.get_submodule(key.rsplit(".", 1)[0])
        module.scale_weight = scale
    model.eval().requires_grad_(False)
    model.checkpoint_format = ckpt.format
    return model


def load_state_dict(source: PathLike | Mapping[str, Tensor], **kwargs) -> dict[str, Tensor]:
    """Canonical (official key names) fp32 state dict of a checkpoint, fp8 scales applied."""
    model = load_dit(source, dtype=torch.float32, weight_dtype=torch.float32, **kwargs)
    return model.state_dict()


# ----------------------------------------------------------------------------------------------
# info


@dataclass
class CheckpointInfo:
    path: str
    format: str
    size: str
    config: WanConfig
    num_params: int
    num_tensors: int
    dtypes: dict[str, int]

    def lines(self) -> list[str]:
        c = self.config
        dts = ", ".join(f"{k} {v:,}" for k, v in sorted(self.dtypes.items(), key=lambda kv: -kv[1]))
        return [
            f"file:        {self.path}",
            f"format:      {self.format}",
            f"model:       {self.size} (Wan2.1 text-to-video DiT architecture)",
            f"parameters:  {self.num_params:,} in {self.num_tensors} tensors",
            f"stored as:   {dts}",
            f"config:      dim {c.dim}, {c.num_layers} layers, {c.num_heads} heads x {c.head_dim}, "
            f"ffn {c.ffn_dim}, text {c.text_dim}x{c.text_len}, patch {tuple(c.patch_size)}",
            "note:        AdaState needs a causal few-step checkpoint (Self-Forcing family or an "
            "AdaState fine-tune); base Wan2.1 T2V weights have the same shapes but are not "
            "distilled for 4-step chunk-wise sampling.",
        ]


def inspect_checkpoint(source: PathLike, **kwargs) -> CheckpointInfo:
    """Format, size, dtype and parameter count of a DiT checkpoint (no weights loaded)."""
    ckpt = read_checkpoint(source, **kwargs)
    return CheckpointInfo(
        path=str(source),
        format=ckpt.format,
        size=ckpt.config.size_name(),
        config=ckpt.config,
        num_params=ckpt.num_params(),
        num_tensors=len(ckpt.names),
        dtypes=dict(ckpt.stored_dtypes()),
    )
