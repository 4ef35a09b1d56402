"""`adastate compare`: one prompt, one seed (so the same content noise), every anchor policy
(and optionally several checkpoints or window sizes), each written as its own video, then one
side-by-side grid video with labels and an evaluation report over them. Resumable: a video of
the set that is already finished (same prompt, seed, settings and length, read from the file)
is kept, an unfinished one of ours is redone, anything else at that name is refused."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AdaStateError

GRID_TAG = "adastate compare grid"


@dataclass
class Run:
    label: str
    anchor: str
    dit: str | None
    window: int | None
    out: Path


def plan_runs(args) -> list[Run]:
    from ..stream.config import POLICIES

    anchors = [a.strip() for a in (args.anchors or "").split(",") if a.strip()]
    if not anchors:
        raise AdaStateError("--anchors needs at least one policy, e.g. adaptive,static,ema,none")
    bad = [a for a in anchors if a not in POLICIES]
    if bad:
        raise AdaStateError(
            f"unknown anchor policy {', '.join(bad)}; choose from {', '.join(POLICIES)}"
        )
    dits = [d.strip() for d in (args.checkpoints or "").split(",") if d.strip()] or [None]
    for d in dits:
        if d is not None and not Path(d).expanduser().is_file():
            raise AdaStateError(f"checkpoint not found: {d}")
    windows: list[int | None] = [None]
    if args.windows:
        try:
            windows = [int(w) for w in args.windows.split(",") if w.strip()]
        except ValueError:
            raise AdaStateError(
                f"--windows takes numbers, e.g. 3,6; got {args.windows!r}"
            ) from None
    out = Path(args.out or "adastate_compare")
    if out.exists() and not out.is_dir():
        raise AdaStateError(f"{out} is a file; compare writes a folder of videos")
    runs = []
    for dit in dits:
        for window in windows:
            for anchor in anchors:
                parts = [anchor]
                if dit is not None and len(dits) > 1:
                    parts.append(Path(dit).stem)
                if window is not None and len(windows) > 1:
                    parts.append(f"W{window}")
                label = " ".join(parts)
                name = "_".join(p.replace("+", "-") for p in parts)
                runs.append(Run(label, anchor, dit, window, out / f"{name}.mp4"))
    return runs


def run_compare(args: argparse.Namespace) -> int:
    from ..generate_cmd import plan as plan_generate
    from ..generate_cmd import run as run_generate
    from ..outputs import existing, video_info
    from .report import evaluate_videos, write_report

    if args.resume or args.prompts or args.init_image or args.init_video:
        raise AdaStateError(
            "compare makes its own set of videos; leave out --resume, --prompts and --init-*"
        )
    runs = plan_runs(args)
    out_dir = Path(args.out or "adastate_compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    # every run checked before anything is generated
    prepared = []
    for r in runs:
        a = argparse.Namespace(**vars(args))
        a.anchor, a.out, a.overwrite = r.anchor, str(r.out), False
        if r.dit is not None:
            a.dit = r.dit
        if r.window is not None:
            a.window = r.window
        found = existing(r.out)
        if found:
            info = video_info(r.out)
            if info is None or not info.ours:
                raise AdaStateError(
                    f"{r.out} exists and was not made by adastate; move it away (compare "
                    "never writes over other files)"
                )
            probe = argparse.Namespace(**vars(a))
            probe.overwrite = True
            job = plan_generate(probe)[0][0]
            expected = job.config.frames_after(job.total)
            if not info.differs(*job.identity) and info.frames == expected:
                print(f"adastate: skip {r.out}: finished")
                continue
            a.overwrite = True  # ours and unfinished or other settings: redo it
        prepared.append((r, a))
    for r, a in prepared:
        print(f"adastate: compare: {r.label} -> {r.out}")
        code = run_generate(a)
        if code:
            return code
    grid = write_grid(
        [r.out for r in runs], [r.label for r in runs], out_dir / "grid.mp4", args.fps
    )
    print(f"wrote {grid}")
    results = evaluate_videos([r.out for r in runs], [r.label for r in runs])
    page = write_report(results, out_dir / "report", title="AdaState anchor comparison")
    print(f"wrote {page}")
    return 0


def write_grid(paths, labels, target: Path, fps: int = 16) -> Path:
    """The videos side by side (up to 3 per row) with their labels, as one mp4. The grid is
    ours: an existing grid.mp4 is replaced only if compare made it."""
    from PIL import Image, ImageDraw

    from ..io import open_writer, read_frames, read_metadata
    from ..outputs import existing, remove

    videos = [read_frames(p) for p in paths]
    sizes = {v.shape[1:3] for v in videos}
    if len(sizes) != 1:
        raise AdaStateError(
            "the compared videos have different sizes ("
            + ", ".join(f"{p.name}: {v.shape[2]}x{v.shape[1]}" for p, v in zip(paths, videos))
            + "); compare videos of one size"
        )
    h, w = sizes.pop()
    n = len(videos)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    label_h = 18
    frames = max(v.shape[0] for v in videos)
    gw, gh = cols * w + (cols - 1) * 4, rows * (h + label_h) + (rows - 1) * 4
    gw, gh = gw + gw % 2, gh + gh % 2
    if existing(target):
        meta = read_metadata(target)
        if meta.get("generator") != GRID_TAG:
            raise AdaStateError(f"{target} exists and compare did not make it; move it away")
        remove(target)
    meta = {"generator": GRID_TAG, "labels": ", ".join(labels)}
    with open_writer(target, fps=fps, metadata=meta, exclusive=True) as writer:
        for t0 in range(0, frames, 16):
            block = []
            for t in range(t0, min(frames, t0 + 16)):
                canvas = Image.new("RGB", (gw, gh), (24, 24, 24))
                draw = ImageDraw.Draw(canvas)
                for k, (v, label) in enumerate(zip(videos, labels)):
                    x, y = (k % cols) * (w + 4), (k // cols) * (h + label_h + 4)
                    frame = v[min(t, v.shape[0] - 1)]
                    canvas.paste(Image.fromarray(frame), (x, y + label_h))
                    draw.text((x + 4, y + 3), label, fill=(255, 255, 255))
                block.append(np.asarray(canvas))
            writer.write(np.stack(block))
    return target


__all__ = ["Run", "plan_runs", "run_compare", "write_grid"]
