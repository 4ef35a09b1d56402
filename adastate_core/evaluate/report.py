"""A report over several videos: a table (CSV + Markdown), plots (PNG: per-second curves, and
consistency against dynamics as in the paper's Fig. 5) and an HTML page with the videos, the
plots and the numbers. Every file is written whole under a temporary name and then renamed;
nothing outside the report folder is touched."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import AdaStateError
from .metrics import VideoMetrics, evaluate_frames

COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (140, 86, 75), (227, 119, 194), (127, 127, 127)]  # fmt: skip
COLUMNS = [
    ("dynamic_clips", "dynamic 2 s clips"),
    ("dynamic", "dynamic (VBench binary)"),
    ("flow_top5", "top-5 % flow px"),
    ("flow_per_frame", "flow px/frame"),
    ("flicker_score", "flicker score"),
    ("mc_residual", "MC residual"),
    ("smoothness", "smoothness"),
    ("content_drift_end", "content drift (end)"),
    ("sharpness_end", "sharpness (end/start)"),
    ("saturation_end", "saturation (end/start)"),
    ("luminance_end", "luminance (end/start)"),
    ("contrast_end", "contrast (end/start)"),
]
CURVES = [
    ("content_drift", "content drift from second 1 (1 - structure correlation)"),
    ("flow_top5", "motion: top-5 % flow, px per 1/8 s"),
    ("sharpness", "sharpness / first 3 s"),
    ("saturation", "saturation / first 3 s"),
    ("luminance", "luminance / first 3 s"),
    ("contrast", "contrast / first 3 s"),
]


REPORT_FILES = (
    "report.csv",
    "report.md",
    "metrics.json",
    "curves.png",
    "scatter.png",
    "index.html",
)
MARKER = ".adastate-report"  # a folder with it holds a report of ours: a rerun replaces it


class EvaluateError(AdaStateError, ValueError):
    """A video that cannot be evaluated (the message says which and why)."""


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """uint8 frames [T, H, W, 3] and fps of a video file (mp4 / webm / gif / webp / png)."""
    from ..io import read_frames

    path = Path(path)
    if not path.exists():
        raise EvaluateError(f"video not found: {path}")
    try:
        frames = read_frames(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure: one clear message
        raise EvaluateError(
            f"{path} is not a readable video ({type(err).__name__}: {err})"
        ) from None
    if frames.ndim != 4 or frames.shape[0] < 2:
        n = 0 if frames.ndim != 4 else frames.shape[0]
        raise EvaluateError(f"{path} has {n} frame(s); motion and flicker need at least 2")
    return np.ascontiguousarray(frames), _fps(path)


def _fps(path: Path) -> float:
    try:
        import av

        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else 16.0
    except Exception:  # noqa: BLE001 - GIF / WebP / PNG frames: adastate writes 16 fps
        return 16.0


def evaluate_videos(
    paths: Sequence[str | Path],
    labels: Sequence[str] | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
) -> list[tuple[str, Path, VideoMetrics]]:
    """Metrics of every video; (label, path, metrics) in order."""
    labels = list(labels) if labels is not None else [Path(p).stem for p in paths]
    out = []
    for k, (label, path) in enumerate(zip(labels, paths)):
        frames, fps = read_video(path)

        def progress(done, total, k=k, label=label):
            if on_progress is not None:
                on_progress(k * 1000 + int(1000 * done / total), 1000 * len(paths), label)

        out.append((label, Path(path), evaluate_frames(frames, fps, on_progress=progress)))
    return out


# -- plots (Pillow) ------------------------------------------------------------------------------


def _panel(draw, box, series, title, x_label):
    draw.rectangle(box, outline=(160, 160, 160))
    draw.text((box[0], box[1] - 14), title, fill=(0, 0, 0))
    pts = [(x, y) for _, s in series for x, y in s if y is not None and math.isfinite(y)]
    if not pts:
        return
    x0, x1 = min(p[0] for p in pts), max(max(p[0] for p in pts), min(p[0] for p in pts) + 1)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    draw.text((box[0] - 40, box[1]), f"{y1:.3g}", fill=(80, 80, 80))
    draw.text((box[0] - 40, box[3] - 12), f"{y0:.3g}", fill=(80, 80, 80))
    draw.text((box[2] - 70, box[3] + 2), f"{x_label} {x1:g}", fill=(80, 80, 80))
    for colour, s in series:
        xy = [
            (box[0] + (box[2] - box[0]) * (x - x0) / (x1 - x0),
             box[3] - (box[3] - box[1]) * (y - y0) / (y1 - y0))
            for x, y in s if y is not None and math.isfinite(y)
        ]  # fmt: skip
        if len(xy) == 1:
            cx, cy = xy[0]
            draw.ellipse((cx - 3, cy - 3, cx + 3, cy + 3), fill=colour)
        elif xy:
            draw.line(xy, fill=colour, width=2)


def curves_png(results, path: Path | None = None) -> bytes:
    """Per-second curves of every video, one panel per quantity."""
    from PIL import Image, ImageDraw

    w, panel_h, pad = 900, 150, 60
    h = pad + panel_h * len(CURVES) + 24 * len(results)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    for i, (name, title) in enumerate(CURVES):
        top = pad // 2 + i * panel_h + 14
        box = (60, top, w - 20, top + panel_h - 40)
        series = [
            (COLOURS[k % len(COLOURS)], [(s, v) for s, v in enumerate(m.curves.get(name, []))])
            for k, (_, _, m) in enumerate(results)
        ]
        _panel(draw, box, series, title, "s")
    legend_top = pad // 2 + len(CURVES) * panel_h + 10
    for k, (label, _, _) in enumerate(results):
        y = legend_top + 22 * k
        draw.rectangle((60, y + 3, 80, y + 13), fill=COLOURS[k % len(COLOURS)])
        draw.text((88, y), label, fill=(0, 0, 0))
    return _png(img, path)


def scatter_png(results, path: Path | None = None) -> bytes:
    """Consistency (1 - content drift at the end) against dynamics (dynamic 2 s clips, or the
    moving-pair fraction for short videos), one dot per video (paper Fig. 5)."""
    from PIL import Image, ImageDraw

    w, h = 640, 520
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    box = (70, 40, w - 30, h - 110)
    draw.rectangle(box, outline=(160, 160, 160))
    draw.text((box[0], 12), "consistency vs dynamics (one dot per video)", fill=(0, 0, 0))
    draw.text(
        (box[0], box[3] + 6), "dynamics: fraction of dynamic 2 s clips (0..1)", fill=(80, 80, 80)
    )
    draw.text(
        (4, box[1] - 14), "consistency: 1 - content drift at the end (0..1)", fill=(80, 80, 80)
    )
    for v in (0.0, 0.5, 1.0):
        x = box[0] + (box[2] - box[0]) * v
        y = box[3] - (box[3] - box[1]) * v
        draw.text((x - 8, box[3] + 20), f"{v:g}", fill=(80, 80, 80))
        draw.text((box[0] - 28, y - 6), f"{v:g}", fill=(80, 80, 80))
    for k, (label, _, m) in enumerate(results):
        dyn = m.dynamic_clips if math.isfinite(m.dynamic_clips) else m.moving_fraction
        cons = 1.0 - m.content_drift_end if math.isfinite(m.content_drift_end) else 0.0
        x = box[0] + (box[2] - box[0]) * min(max(dyn, 0.0), 1.0)
        y = box[3] - (box[3] - box[1]) * min(max(cons, 0.0), 1.0)
        colour = COLOURS[k % len(COLOURS)]
        draw.ellipse((x - 6, y - 6, x + 6, y + 6), fill=colour)
        draw.text((x + 9, y - 6), label, fill=colour)
    return _png(img, path)


def _png(img, path: Path | None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    data = buf.getvalue()
    if path is not None:
        _write(path, data)
    return data


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    os.replace(tmp, path)


# -- tables and the page -------------------------------------------------------------------------


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3f}"
    return str(value)


def markdown_table(results) -> str:
    head = "| video | " + " | ".join(t for _, t in COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    rows = [
        f"| {label} | " + " | ".join(_fmt(getattr(m, key)) for key, _ in COLUMNS) + " |"
        for label, _, m in results
    ]
    return "\n".join([head, rule, *rows]) + "\n"


def write_report(
    results, out: str | Path, title: str = "AdaState evaluation", vbench: dict | None = None
) -> Path:
    """report.csv, report.md, curves.png, scatter.png, metrics.json and index.html in `out`
    (with `vbench`, label -> {dimension: score} from VBench, a table of those too).
    -> the HTML page."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EvaluateError(f"{out} is a file; the report needs a folder")
    taken = [n for n in REPORT_FILES if (out / n).exists()]
    if taken and not (out / MARKER).exists():  # files of the user's, not an earlier report
        raise EvaluateError(
            f"{out} already holds {', '.join(taken)} that no adastate report wrote; choose "
            "another --out folder (a report never writes over other files)"
        )
    out.mkdir(parents=True, exist_ok=True)
    _write(out / MARKER, "written by adastate evaluate; its files here are replaced by a rerun\n")
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = list(results[0][2].summary()) if results else []
    writer.writerow(["video", "path", *keys])
    for label, path, m in results:
        s = m.summary()
        writer.writerow([label, str(path), *(s[k] for k in keys)])
    _write(out / "report.csv", buf.getvalue())
    table = markdown_table(results)
    vb_md, vb_html = _vbench_tables(results, vbench) if vbench else ("", "")
    _write(out / "report.md", f"# {title}\n\n{table}{vb_md}")
    data = {
        label: {"path": str(path), **m.summary(), "curves": m.curves} for label, path, m in results
    }
    for label in data if vbench else ():
        data[label]["vbench"] = vbench.get(label, {})
    _write(out / "metrics.json", json.dumps(data, indent=1, default=_json_default))
    curves_png(results, out / "curves.png")
    scatter_png(results, out / "scatter.png")
    videos = []
    for label, path, _ in results:
        rel = os.path.relpath(Path(path).resolve(), out.resolve())
        tag = "img" if Path(path).suffix.lower() in (".gif", ".webp") else "video"
        media = (
            f'<img src="{html.escape(rel)}" alt="{html.escape(label)}">'
            if tag == "img"
            else f'<video src="{html.escape(rel)}" controls muted loop preload="metadata"></video>'
        )
        videos.append(f"<figure>{media}<figcaption>{html.escape(label)}</figcaption></figure>")
    rows = "".join(
        "<tr><td>" + html.escape(label) + "</td>"
        + "".join(f"<td>{_fmt(getattr(m, k))}</td>" for k, _ in COLUMNS) + "</tr>"
        for label, _, m in results
    )  # fmt: skip
    head = "".join(f"<th>{html.escape(t)}</th>" for _, t in COLUMNS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
.videos {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; }} video, .videos img {{ max-width: 420px; display: block; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class="videos">{"".join(videos)}</div>
<h2>Numbers</h2>
<table><thead><tr><th>video</th>{head}</tr></thead><tbody>{rows}</tbody></table>
<p>Dynamic degree: VBench's recipe with OpenCV DIS flow (threshold 6·min(H,W)/256 px per 1/8 s;
"dynamic 2 s clips" is VBench-Long's fraction). Flicker: VBench's (255 − MAE)/255; MC residual:
MAE after warping by the flow. Drift: content (structure of grey thumbnails) from second 1,
quality (sharpness, saturation, luminance, contrast) relative to the first 3 s.
Files: <a href="report.csv">report.csv</a>, <a href="report.md">report.md</a>,
<a href="metrics.json">metrics.json</a>.</p>
{vb_html}
<h2>Consistency vs dynamics</h2><img src="scatter.png" alt="consistency vs dynamics">
<h2>Per second</h2><img src="curves.png" alt="per-second curves">
</body></html>
"""
    _write(out / "index.html", page)
    return out / "index.html"


def _vbench_tables(results, vbench: dict) -> tuple[str, str]:
    """VBench's scores as a Markdown section and an HTML table."""
    dims = sorted({d for scores in vbench.values() for d in scores})
    rows = [(label, vbench.get(label, {})) for label, _, _ in results]
    md = "\n## VBench (its own models)\n\n| video | " + " | ".join(dims) + " |\n"
    md += "|---|" + "---|" * len(dims) + "\n"
    md += "".join(
        f"| {label} | " + " | ".join(_fmt(r.get(d, float("nan"))) for d in dims) + " |\n"
        for label, r in rows
    )
    head = "".join(f"<th>{html.escape(d)}</th>" for d in dims)
    body = "".join(
        "<tr><td>" + html.escape(label) + "</td>"
        + "".join(f"<td>{_fmt(r.get(d, float('nan')))}</td>" for d in dims) + "</tr>"
        for label, r in rows
    )  # fmt: skip
    page = f"<h2>VBench (its own models)</h2><table><thead><tr><th>video</th>{head}</tr></thead>"
    return md, page + f"<tbody>{body}</tbody></table>"


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.bool_):
        return bool(v)
    raise TypeError(type(v).__name__)


__all__ = [
    "EvaluateError",
    "curves_png",
    "evaluate_videos",
    "markdown_table",
    "read_video",
    "scatter_png",
    "write_report",
]
