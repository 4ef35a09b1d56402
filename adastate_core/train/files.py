"""What a training run writes into its OUT folder (every file is the run's own):

* `adastate_dmd.pt`: {"generator", "generator_ema" (once the EMA exists), "config"}; canonical
  fp32 weights, readable with `torch.load(weights_only=True)` and by `load_dit` (which prefers
  `generator_ema`, as for Self-Forcing's checkpoints);
* `adastate_dmd.safetensors`: the EMA generator (the generator before the EMA starts) as a
  ComfyUI-repack file for Load AdaState Model / `adastate generate --dit`;
* `train_state.pt`: models, optimizers, EMA and step for a bit-identical `--resume`;
* `run.json`: the settings and files of the run; `log.jsonl`: one line per iteration;
  `loss_curve.png`; `samples/`: short videos from the EMA generator.
Each checkpoint file is written to a temporary name, synced, then renamed over the previous
one, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from ..errors import AdaStateError
from ..model import CausalWanDiT

INFERENCE_PT = "adastate_dmd.pt"
INFERENCE_ST = "adastate_dmd.safetensors"
TRAIN_STATE = "train_state.pt"
RUN_JSON = "run.json"
LOG = "log.jsonl"
CURVE = "loss_curve.png"
SAMPLES = "samples"
OWN_FILES = (INFERENCE_PT, INFERENCE_ST, TRAIN_STATE, RUN_JSON, LOG, CURVE, SAMPLES)


def hints(model: CausalWanDiT) -> dict:
    cfg = model.config
    return {"num_heads": cfg.num_heads, "text_len": cfg.text_len, "eps": cfg.eps}


def _atomic(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # some writers create private files
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_checkpoints(
    out: Path,
    generator: dict[str, Tensor],
    ema: dict[str, Tensor] | None,
    config_hints: dict,
    *,
    save_dtype: torch.dtype = torch.bfloat16,
    meta: dict | None = None,
) -> tuple[Path, Path]:
    """Write both inference files (see the module docstring)."""
    from safetensors.torch import save_file

    payload = {"generator": generator, "config": config_hints}
    if ema is not None:
        payload["generator_ema"] = ema
    pt = _atomic(out / INFERENCE_PT, lambda p: torch.save(payload, p))
    best = ema if ema is not None else generator
    tensors = {"model.diffusion_model." + k: v.to(save_dtype).contiguous() for k, v in best.items()}
    metadata = {"config": json.dumps(config_hints), "trained_by": "adastate train"}
    metadata.update({k: str(v) for k, v in (meta or {}).items()})
    st = _atomic(out / INFERENCE_ST, lambda p: save_file(tensors, str(p), metadata))
    return pt, st


def save_train_state(out: Path, state: dict) -> Path:
    return _atomic(out / TRAIN_STATE, lambda p: torch.save(state, p))


def load_train_state(path: Path) -> dict:
    from .trainer import STATE_FORMAT

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AdaStateError(
            f"{path} could not be read as a training state ({str(err).splitlines()[0]}); it is "
            "damaged: start a new run or restore the file"
        ) from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise AdaStateError(f"{path} is not an AdaState training state")
    return state


class LossLog:
    """log.jsonl: one JSON object per iteration; on resume, lines at or after the resumed
    iteration (written after the last saved state) are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            keep = [
                line
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("iteration", -1) < resume_step
            ]
            _atomic(path, lambda p: Path(p).write_text("".join(k + "\n" for k in keep)))

    def append(self, entry: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def plot_losses(entries: list[dict], path: Path) -> Path | None:
    """A loss-curve PNG (critic loss per iteration, generator loss per generator update,
    each on its own panel with its own scale), drawn with Pillow."""
    from PIL import Image, ImageDraw

    series = [
        ("critic loss (flow matching)", [(e["iteration"], e.get("critic_loss")) for e in entries]),
        ("generator loss (DMD)", [(e["iteration"], e.get("generator_loss")) for e in entries]),
    ]
    series = [
        (n, [(x, y) for x, y in pts if y is not None and math.isfinite(y)]) for n, pts in series
    ]
    if not any(pts for _, pts in series):
        return None
    w, h, pad = 720, 480, 44
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    panel_h = (h - pad) // 2
    colours = [(31, 119, 180), (214, 39, 40)]
    for k, ((name, pts), colour) in enumerate(zip(series, colours)):
        top = pad // 2 + k * panel_h
        box = (pad, top + 18, w - pad // 2, top + panel_h - 18)
        draw.rectangle(box, outline=(160, 160, 160))
        draw.text((pad, top + 2), name, fill=(0, 0, 0))
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        y0, y1 = min(ys), max(ys)
        if y1 - y0 < 1e-12:
            y0, y1 = y0 - 0.5, y1 + 0.5
        draw.text((4, box[1]), f"{y1:.3g}", fill=(80, 80, 80))
        draw.text((4, box[3] - 12), f"{y0:.3g}", fill=(80, 80, 80))
        draw.text((box[2] - 60, box[3] + 2), f"iter {x1}", fill=(80, 80, 80))

        def to_xy(x, y, box=box, x0=x0, x1=x1, y0=y0, y1=y1):
            fx = box[0] + (box[2] - box[0]) * (x - x0) / (x1 - x0)
            fy = box[3] - (box[3] - box[1]) * (y - y0) / (y1 - y0)
            return fx, fy

        coords = [to_xy(x, y) for x, y in pts]
        if len(coords) == 1:
            cx, cy = coords[0]
            draw.ellipse((cx - 2, cy - 2, cx + 2, cy + 2), fill=colour)
        else:
            draw.line(coords, fill=colour, width=2)
    return _atomic(path, lambda p: img.save(p, format="PNG"))
