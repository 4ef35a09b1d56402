"""Video metrics on synthetic videos with known answers (static, pan, flashing, colour fade,
scene cut), resolution scaling, the evaluate report (files, HTML in Chromium where available),
`adastate compare` end to end on tiny models, and bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("av")

from adastate_core.evaluate import evaluate_frames, motion_threshold  # noqa: E402
from adastate_core.evaluate.report import EvaluateError, read_video, write_report  # noqa: E402
from adastate_core.io import open_writer  # noqa: E402

from conftest import REPO  # noqa: E402

H, W, T = 96, 128, 48


def texture(h=H, w=W, extra=400, seed=0):
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur((rng.random((h + 40, w + extra)) * 255).astype(np.float32), (0, 0), 3)
    t = cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.stack([t, t[::-1], 255 - t], -1)


def video(fn, n=T):
    return np.stack([fn(i) for i in range(n)]).astype(np.uint8)


TEX = texture()
STATIC = video(lambda i: TEX[:H, :W])


def pan(k):
    return video(lambda i: TEX[:H, i * k : i * k + W])


def test_static_video():
    m = evaluate_frames(STATIC, 16)
    assert not m.dynamic and m.dynamic_clips == 0 and m.flow_top5 < 0.05
    assert m.flicker_mae == 0 and m.flicker_score == 1 and m.mc_residual < 0.05
    assert m.content_drift_end < 1e-4 and m.sharpness_end == pytest.approx(1)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_pan_flow_is_its_speed(k):
    m = evaluate_frames(pan(k), 16)
    assert m.flow_per_frame == pytest.approx(k, rel=0.05)
    assert m.flow_mean == pytest.approx(2 * k, rel=0.05)  # 16 fps: pairs 1/8 s apart
    assert m.mc_residual < 0.2 * m.flicker_mae  # motion, not flicker


def test_flashing_is_flicker_not_motion():
    flash = video(lambda i: np.clip(TEX[:H, :W].astype(int) + (30 if i % 2 else -30), 0, 255))
    m = evaluate_frames(flash, 16)
    assert m.flicker_mae > 40 and m.mc_residual > 40 and m.flicker_score < 0.85
    assert not m.dynamic and m.flow_top5 < 1


def test_slow_colour_fade_is_quality_drift_not_content_drift():
    grey = cv2.cvtColor(TEX[:H, :W], cv2.COLOR_RGB2GRAY)[..., None].astype(float)

    def frame(i):
        a = 1 - i / (3 * T)  # colour fades towards grey over the video
        return np.clip(grey + a * (TEX[:H, :W] - grey), 0, 255)

    m = evaluate_frames(video(frame, 3 * T), 16)
    assert m.saturation_end < 0.6
    assert m.content_drift_end < 0.05 and not m.dynamic


def test_scene_cut_is_content_drift():
    other = texture(seed=5)
    m = evaluate_frames(video(lambda i: TEX[:H, :W] if i < 32 else other[:H, :W], 80), 16)
    curve = m.curves["content_drift"]
    assert curve[0] < 0.01 and curve[-1] > 0.5 and m.content_drift_end > 0.5


def test_thresholds_scale_with_resolution():
    assert motion_threshold(480, 832) == pytest.approx(11.25)
    assert motion_threshold(240, 416) == pytest.approx(11.25 / 2)
    small = evaluate_frames(pan(3), 16)
    big_tex = cv2.resize(TEX, (TEX.shape[1] * 2, TEX.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    big = evaluate_frames(video(lambda i: big_tex[: 2 * H, 6 * i : 6 * i + 2 * W]), 16)
    assert big.threshold_px == pytest.approx(2 * small.threshold_px)
    assert big.flow_per_frame == pytest.approx(2 * small.flow_per_frame, rel=0.05)
    assert big.dynamic == small.dynamic and big.dynamic_clips == small.dynamic_clips


def write(path, frames, fps=16):
    with open_writer(path, fps=fps) as w:
        w.write(frames)
    return path


def test_evaluate_cli_writes_the_report(tmp_path):
    from adastate_core.cli import main

    a = write(tmp_path / "static.mp4", STATIC)
    b = write(tmp_path / "pan.mp4", pan(4))
    out = tmp_path / "report"
    assert main(["evaluate", str(a), str(b), "--out", str(out), "--labels", "still,moving"]) == 0
    for name in (
        "report.csv",
        "report.md",
        "metrics.json",
        "curves.png",
        "scatter.png",
        "index.html",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    data = json.loads((out / "metrics.json").read_text())
    assert data["moving"]["flow_per_frame"] == pytest.approx(4, rel=0.1)
    assert data["still"]["flow_per_frame"] < 0.3  # mp4 noise only
    page = (out / "index.html").read_text()
    assert "static.mp4" in page and "scatter.png" in page


def test_report_html_opens_in_chromium_without_errors(tmp_path):
    pytest.importorskip("websocket", reason="pip install websocket-client")
    sys.path.insert(0, str(REPO / "tests" / "comfy_host"))
    import browser

    if browser.chromium() is None:
        pytest.skip("no chromium")
    v = write(tmp_path / "pan.mp4", pan(4))
    frames, fps = read_video(v)
    page = write_report([("pan", v, evaluate_frames(frames, fps))], tmp_path / "report")
    b = browser.Browser(port=__import__("host").free_port())
    try:
        tab = b.tab()
        tab.navigate(page.as_uri())
        tab.pump(1.0)
        loaded = tab.eval("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert loaded is True
        assert tab.error_texts() == []
    finally:
        b.close()


def test_bad_videos(tmp_path, capsys):
    from adastate_core.cli import main

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    one = write(tmp_path / "one.mp4", STATIC[:1])
    for path, words in ((tmp_path / "missing.mp4", "not found"), (junk, "not a readable video"),
                        (one, "at least 2")):  # fmt: skip
        assert main(["evaluate", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    with pytest.raises(EvaluateError):
        read_video(junk)


def test_grid_refuses_mixed_sizes(tmp_path):
    from adastate_core.errors import AdaStateError
    from adastate_core.evaluate.compare import write_grid

    a = write(tmp_path / "a.mp4", STATIC)
    b = write(tmp_path / "b.mp4", STATIC[:, :64, :64])
    with pytest.raises(AdaStateError, match="different sizes"):
        write_grid([a, b], ["a", "b"], tmp_path / "grid.mp4")


def test_compare_end_to_end_and_resumable(tmp_path, capsys):
    from tiny_models import write_tiny_models

    from adastate_core.cli import main
    from adastate_core.io import read_frames

    models = tmp_path / "models"
    write_tiny_models(models)
    out = tmp_path / "cmp"
    args = ["compare", "--models-dir", str(models), "--cache-dir", str(tmp_path / "emb"),
            "--height", "64", "--width", "96", "--prompt", "a red fox", "--chunks", "2",
            "--anchors", "adaptive,none", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    for name in ("adaptive.mp4", "none.mp4", "grid.mp4", "report/index.html", "report/scatter.png"):
        assert (out / name).is_file(), name
    grid = read_frames(out / "grid.mp4")
    assert grid.shape[2] >= 2 * 96 and grid.shape[0] == read_frames(out / "none.mp4").shape[0]
    before = (out / "adaptive.mp4").read_bytes()
    capsys.readouterr()
    assert main(args) == 0  # again: both finished, kept
    assert "skip" in capsys.readouterr().out and (out / "adaptive.mp4").read_bytes() == before


def test_evaluate_node_on_frames_and_files(tmp_path):
    import torch

    from nodes import NODE_CLASS_MAPPINGS as NODES
    from nodes.common import NodeInputError

    node = NODES["AdaState_Evaluate"]()
    frames = torch.from_numpy(pan(4).astype(np.float32) / 255)
    path = write(tmp_path / "still.mp4", STATIC)
    out = node.evaluate(16.0, "moving", images=frames, video_1=str(path))
    text, scatter, curves = out["result"]
    assert "| moving |" in text and "| still |" in text and out["ui"]["text"] == [text]
    assert scatter.ndim == 4 and scatter.shape[-1] == 3 and curves.shape[0] == 1
    with pytest.raises(NodeInputError, match="connect frames"):
        node.evaluate(16.0, "")
    with pytest.raises(NodeInputError, match="at least 2"):
        node.evaluate(16.0, "", images=frames[:1])


def test_vbench_is_optional_and_never_downloads(tmp_path, monkeypatch, capsys):
    """Without VBench the request is refused with a message before any work; with a VBench
    package but no weights folder too; with both, its per-video results join the report."""
    import types

    from adastate_core.cli import main

    a = write(tmp_path / "a.mp4", pan(3))
    monkeypatch.setitem(sys.modules, "vbench", None)  # not installed
    assert main(["evaluate", str(a), "--vbench", "--out", str(tmp_path / "r0")]) == 2
    assert "pip install vbench" in capsys.readouterr().err
    assert not (tmp_path / "r0" / "index.html").exists()

    calls = []

    class FakeVBench:  # VBench's custom-input API, writing its results file
        def __init__(self, device, full_info, output_path):
            self.out = output_path

        def evaluate(self, videos_path, name, dimension_list, local, mode):
            calls.append((mode, local, list(dimension_list)))
            videos = sorted(__import__("os").listdir(videos_path))
            res = {d: [0.5, [{"video_path": f"{videos_path}/{v}", "video_results": 0.9}
                             for v in videos]] for d in dimension_list}  # fmt: skip
            (__import__("pathlib").Path(self.out) / f"{name}_eval_results.json").write_text(
                json.dumps(res)
            )

    monkeypatch.setitem(sys.modules, "vbench", types.SimpleNamespace(VBench=FakeVBench))
    weights = tmp_path / "vbench_cache"
    monkeypatch.setenv("VBENCH_CACHE_DIR", str(weights))
    assert main(["evaluate", str(a), "--vbench", "--out", str(tmp_path / "r1")]) == 2
    assert "no VBench model weights" in capsys.readouterr().err
    weights.mkdir()
    (weights / "raft-things.pth").write_bytes(b"x")
    assert main(["evaluate", str(a), "--vbench", "--out", str(tmp_path / "r2")]) == 0
    assert calls and calls[0][:2] == ("custom_input", True)
    data = json.loads((tmp_path / "r2" / "metrics.json").read_text())
    assert data["a"]["vbench"]["dynamic_degree"] == 0.9
    assert "VBench (its own models)" in (tmp_path / "r2" / "index.html").read_text()


def test_short_video_has_no_clip_score():
    m = evaluate_frames(pan(3)[:20], 16)  # shorter than one 2 s clip
    assert np.isnan(m.dynamic_clips) and m.moving_pairs > 0


def test_report_never_writes_over_other_files(tmp_path, capsys):
    from adastate_core.cli import main

    a = write(tmp_path / "a.mp4", pan(3))
    mine = tmp_path / "r" / "index.html"
    mine.parent.mkdir()
    mine.write_text("my page")
    assert main(["evaluate", str(a), "--out", str(tmp_path / "r")]) == 2
    assert "never writes over" in capsys.readouterr().err and mine.read_text() == "my page"
    ok = tmp_path / "ok"
    assert main(["evaluate", str(a), "--out", str(ok)]) == 0
    assert main(["evaluate", str(a), "--out", str(ok)]) == 0  # our own report: rerun replaces it
