"""Finding the model files a user already has (ComfyUI's `models/` layout, Self-Forcing `.pt`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AdaStateError

COMFY_REPACK = "Comfy-Org/Wan_2.1_ComfyUI_repackaged on Hugging Face (split_files/...)"
WHERE = {
    "dit": (
        "diffusion_models",
        "a causal few-step Wan2.1 DiT: self_forcing_dmd.pt (Hugging Face gdhe17/Self-Forcing, "
        "checkpoints/), a Causal-Forcing / Reward-Forcing / LongLive checkpoint, or an "
        "AdaState fine-tune",
    ),
    "vae": ("vae", f"wan_2.1_vae.safetensors from {COMFY_REPACK}"),
    "text_encoder": (
        "text_encoders",
        f"umt5_xxl_fp8_e4m3fn_scaled.safetensors (or umt5_xxl_fp16.safetensors) from {COMFY_REPACK}",
    ),
}
FOLDERS = {
    "dit": ("diffusion_models", "unet"),
    "vae": ("vae",),
    "text_encoder": ("text_encoders", "clip"),
}
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt")
CAUSAL_NAMES = re.compile(
    r"self[_-]?forcing|causal|reward[_-]?forcing|longlive|adastate|rolling", re.I
)
VAE_NAMES = re.compile(r"wan[_-]?2\.?1.*vae|wan2\.1_vae|Wan2\.1_VAE", re.I)
TEXT_NAMES = re.compile(r"umt5", re.I)


class MissingModelError(AdaStateError, FileNotFoundError):
    pass


@dataclass(frozen=True)
class ModelFiles:
    dit: Path
    vae: Path
    text_encoder: Path | None
    notes: tuple[str, ...] = ()


def _missing(kind: str, detail: str, models_dir: Path | None) -> MissingModelError:
    folder, what = WHERE[kind]
    where = f"{models_dir}/{folder}/" if models_dir else f"models/{folder}/"
    flag = {"dit": "--dit", "vae": "--vae", "text_encoder": "--text-encoder"}[kind]
    return MissingModelError(f"{detail}. Put {what} into {where} (or pass {flag} FILE)")


def _folders(models_dir: Path, kind: str) -> list[Path]:
    roots = [models_dir, models_dir / "models"]
    return [r / f for r in roots for f in FOLDERS[kind] if (r / f).is_dir()]


def _candidates(models_dir: Path, kind: str) -> list[Path]:
    files = []
    for folder in _folders(models_dir, kind):
        files += sorted(p for p in folder.rglob("*") if p.suffix in MODEL_SUFFIXES and p.is_file())
    return files


def _explicit(path: str | Path, kind: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise _missing(kind, f"{kind.replace('_', ' ')} file not found: {p}", None)
    return p


def find_models(
    models_dir: str | Path | None = None,
    *,
    dit: str | Path | None = None,
    vae: str | Path | None = None,
    text_encoder: str | Path | None = None,
    need_text_encoder: bool = True,
) -> ModelFiles:
    """Resolve the DiT, VAE and text-encoder files: explicit paths win; otherwise look in a
    ComfyUI models folder (or a ComfyUI root holding `models/`)."""
    root = Path(models_dir).expanduser() if models_dir else None
    if root is not None and not root.is_dir():
        raise MissingModelError(f"--models-dir {root} is not a folder")
    notes: list[str] = []

    def pick(kind: str, explicit, pattern: re.Pattern | None) -> Path | None:
        if explicit:
            return _explicit(explicit, kind)
        if root is None:
            return None
        found = _candidates(root, kind)
        preferred = [p for p in found if pattern is None or pattern.search(p.name)]
        if len(preferred) == 1:
            return preferred[0]
        if len(preferred) > 1:
            names = ", ".join(p.name for p in preferred[:6])
            flag = {"dit": "--dit", "vae": "--vae", "text_encoder": "--text-encoder"}[kind]
            raise MissingModelError(
                f"several {kind.replace('_', ' ')} files fit in {root}: {names}; choose one with {flag}"
            )
        return None

    dit_path = pick("dit", dit, CAUSAL_NAMES)
    if dit_path is None and root is not None:
        base = [p for p in _candidates(root, "dit") if re.search(r"wan2\.?1.*t2v", p.name, re.I)]
        if len(base) == 1:
            dit_path = base[0]
            notes.append(
                f"using {base[0].name}: the base Wan2.1 T2V weights are not distilled for 4-step "
                "chunk-wise sampling, expect poor video; use a causal checkpoint such as "
                "self_forcing_dmd.pt"
            )
    if dit_path is None:
        raise _missing("dit", "no causal Wan2.1 DiT found", root)
    vae_path = pick("vae", vae, VAE_NAMES)
    if vae_path is None:
        raise _missing("vae", "no Wan2.1 VAE found", root)
    te_path = pick("text_encoder", text_encoder, TEXT_NAMES)
    if te_path is None and need_text_encoder:
        raise _missing("text_encoder", "no umT5-XXL text encoder found", root)
    return ModelFiles(dit_path, vae_path, te_path, tuple(notes))
