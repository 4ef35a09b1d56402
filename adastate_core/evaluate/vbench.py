"""Optional: VBench's own dimensions (subject / background consistency with DINO / CLIP, motion
smoothness with AMT, dynamic degree with RAFT, aesthetic and imaging quality), when the user has
installed VBench *and* its model weights. adastate downloads nothing: without the package or
its weight folder the request is refused with a message, and Hugging Face access is forced
offline for the call.

VBench's Python API in its custom-input mode is used as documented by VBench
(`VBench(device, full_info_json, output_path).evaluate(videos_path, name, dimension_list=...,
local=True, mode="custom_input")`); its per-video results are read back from the
`<name>_eval_results.json` it writes: {dimension: [mean, [{"video_path", "video_results"}]]}.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .report import EvaluateError

DIMENSIONS = (
    "subject_consistency",
    "background_consistency",
    "motion_smoothness",
    "dynamic_degree",
    "temporal_flickering",
    "aesthetic_quality",
    "imaging_quality",
)


def weights_folder() -> Path:
    return Path(os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench")


def run_vbench(
    paths: Sequence[str | Path],
    labels: Sequence[str],
    out: str | Path,
    dimensions: Sequence[str] = DIMENSIONS,
    device: str | None = None,
) -> dict[str, dict[str, float]]:
    """label -> {dimension: score} from VBench, or EvaluateError saying what is missing."""
    try:
        from vbench import VBench
    except ImportError:
        raise EvaluateError(
            "--vbench needs VBench installed (pip install vbench) with its model weights "
            f"already in {weights_folder()} (or VBENCH_CACHE_DIR); adastate downloads nothing. "
            "Without it the offline metrics are reported"
        ) from None
    cache = weights_folder()
    if not cache.is_dir() or not any(cache.iterdir()):
        raise EvaluateError(
            f"--vbench: no VBench model weights in {cache}; put them there (VBench's own "
            "download step) or set VBENCH_CACHE_DIR; adastate downloads nothing"
        )
    bad = [d for d in dimensions if d not in DIMENSIONS]
    if bad:
        raise EvaluateError(f"--vbench dimensions {bad} are not custom-input dimensions")
    work = Path(out) / "vbench"
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    names = {}
    for label, path in zip(labels, paths):
        link = videos / f"{label.replace(' ', '_')}{Path(path).suffix}"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(path).resolve())
        names[link.name] = label
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    bench = VBench(device, str(work / "full_info.json"), str(work))
    try:
        bench.evaluate(
            videos_path=str(videos), name="adastate", dimension_list=list(dimensions),
            local=True, mode="custom_input",
        )  # fmt: skip
    except Exception as err:  # noqa: BLE001 - VBench's own failure, one line
        raise EvaluateError(f"VBench failed: {type(err).__name__}: {err}") from None
    return parse_results(work / "adastate_eval_results.json", names)


def parse_results(path: Path, names: dict[str, str]) -> dict[str, dict[str, float]]:
    """VBench's results file -> label -> {dimension: score}."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise EvaluateError(f"VBench wrote no readable results ({err})") from None
    out: dict[str, dict[str, float]] = {}
    for dim, value in data.items():
        per_video = value[1] if isinstance(value, list) and len(value) > 1 else []
        for entry in per_video:
            name = Path(str(entry.get("video_path", ""))).name
            label = names.get(name)
            if label is not None and isinstance(entry.get("video_results"), (int, float, bool)):
                out.setdefault(label, {})[dim] = float(entry["video_results"])
    return out


__all__ = ["DIMENSIONS", "parse_results", "run_vbench", "weights_folder"]
