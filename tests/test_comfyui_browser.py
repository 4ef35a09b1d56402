"""The pack as an artist meets it: the real ComfyUI web app in headless Chromium, workflows
loaded and queued through the app itself and run to completion, then the canvas inspected as
drawn. A host test that only reads /history cannot see a frozen canvas; these do.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python -m pytest -m comfyui tests/test_comfyui_browser.py

Needs chromium (apt-get install chromium) and websocket-client; skips without them.
ADASTATE_SCREENSHOTS=DIR keeps the screenshots taken after each run.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import REAL_COMFYUI, REPO

sys.path.insert(0, str(REPO / "tests" / "comfy_host"))
import browser  # noqa: E402
import host  # noqa: E402
import webapp  # noqa: E402

pytestmark = REAL_COMFYUI

UI = REPO / "workflows"
OUTPUT_TYPES = ["AdaState_Generate", "AdaState_VideoCombine"]
SWAPS = {"CLIPLoader": "AdaStateTest_CLIP"}
# Console noise of the host, not of the pack: this sandbox has no internet (the frontend asks
# api.comfy.org and huggingface.co), and a fresh user folder has no user.css / saved workflows.
ENVIRONMENT = re.compile(
    r"ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED"
    r"|Error fetching file size: TypeError: Failed to fetch"
    r"|status of 404 \(Not Found\) \(http://127\.0\.0\.1:\d+/(api/userdata|user\.css|favicon\.ico)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("websocket", reason="pip install websocket-client")
    if browser.chromium() is None:
        pytest.skip("no chromium (apt-get install chromium)")
    srv = host.start_server(tmp_path_factory.mktemp("comfy_browser"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def chrome(server):
    b = browser.Browser(port=host.free_port())
    try:
        yield b
    finally:
        b.close()


def shots(tmp_path) -> Path:
    return Path(os.environ.get("ADASTATE_SCREENSHOTS") or tmp_path)


def tiny(seed: int) -> dict:
    return {"width": host.WIDTH, "height": host.HEIGHT, "seconds": host.SECONDS,
            "preview_frames": 16, "dit_name": host.DIT_NAME, "vae_name": host.VAE_NAME,
            "seed": seed}  # fmt: skip


def new_errors(tab, since: int) -> list[str]:
    return [e for e in tab.error_texts()[since:] if not ENVIRONMENT.search(e)]


def ours(errors: list[str]) -> list[str]:
    return [e for e in errors if "adastate" in e.lower()]


LIVE_NOW = r"""
() => JSON.stringify(app.graph.nodes.filter((n) => (n.widgets ?? []).some(
  (w) => w.name === "adastate_live_preview" && w.__img?.complete && w.__img.naturalWidth > 0
)).map((n) => n.id))
"""


def run_watching(tab, timeout: float = 900.0) -> tuple[dict, set[int]]:
    """Queue the loaded workflow and wait for it; -> (end state, ids of the nodes that showed
    a live chunk preview while it ran)."""
    tab.call_function(webapp.QUEUE)
    seen: set[int] = set()
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen |= set(json.loads(tab.call_function(LIVE_NOW)))
        state = json.loads(tab.eval(webapp.RUN_STATE) or "null")
        if state and state.get("done"):
            return state, seen
        time.sleep(0.5)
    raise TimeoutError("the queued workflow did not finish")


def wait_for_player(tab, node_id: int, timeout: float = 30.0) -> dict:
    """The node's media once its video player has loaded (the frontend loads it after the
    prompt ends)."""
    deadline = time.time() + timeout
    while True:
        m = webapp.media(tab, OUTPUT_TYPES)[str(node_id)]
        if any(v["ready"] >= 2 for v in m["videos"]) or time.time() > deadline:
            return m
        tab.pump(0.5)


def test_anchor_comparison_runs_to_completion_in_the_web_app(server, chrome, tmp_path):
    """Load the anchor comparison as an artist does, press Queue, wait: the canvas keeps
    drawing every node, each output node plays its video, no error reaches the console."""
    tab = chrome.tab()
    webapp.open_app(tab, server)
    startup = len(tab.error_texts())
    assert ours(tab.error_texts()) == []
    wf = json.loads((UI / "AdaState anchor comparison.json").read_text())
    count = webapp.load(tab, wf, tiny(int(time.time()) % 100000), SWAPS)
    assert count == len(wf["nodes"])
    stub = json.loads(tab.eval(
        "JSON.stringify(app.graph.nodes.filter(n => n.type === 'AdaStateTest_CLIP').map(n => n.id))"
    ))  # fmt: skip

    state, live = run_watching(tab)
    assert state["status"] == "success", json.dumps(state.get("detail") or state)[:3000]
    for node_id in json.loads(tab.eval(
        "JSON.stringify(app.graph.nodes.filter(n => n.type.startsWith('AdaState_Generate') || "
        "n.type === 'AdaState_VideoCombine').map(n => n.id))"
    )):  # fmt: skip
        wait_for_player(tab, node_id)  # the players load their videos

    report = webapp.canvas_report(tab)
    tab.screenshot(shots(tmp_path) / "anchor_comparison_after_run.png")
    assert report["error"] is None, report["error"]
    assert report["alive"], "the canvas stopped drawing (frozen)"
    assert sorted(report["drawn"]) == sorted(report["ids"]), report
    overlaps = [o for o in report["overlaps"] if o[0] not in stub and o[2] not in stub]
    assert overlaps == [], f"nodes cover each other after the run: {overlaps}"

    media = webapp.media(tab, OUTPUT_TYPES)
    assert len(media) == 5, media  # four Generate Stream + Video Combine
    for node_id, m in media.items():
        assert m["widgets"].count("video-preview") == 1, (node_id, m)
        (video,) = m["videos"]
        assert video["shown"] and video["ready"] >= 2, (node_id, video)
        assert re.search(r"filename=\w+_\d{5}_\.mp4", video["src"]), video["src"]
        assert "adastate_live_preview" not in m["widgets"], "the live preview outlived the run"
        assert m["imgs"] == [], (node_id, m["imgs"])  # no leftover core image preview
    generate_ids = {int(k) for k, m in media.items() if m["type"] == "AdaState_Generate"}
    assert generate_ids & live, "no chunk preview was shown while the streams ran"
    assert live <= generate_ids, live

    errors = new_errors(tab, startup)
    assert not [e for e in errors if "TypeError" in e], errors
    assert errors == [], errors


OTHER_WORKFLOW_EVENT = r"""
(nodeId) => {
  const api = window.comfyAPI?.api?.api ?? app.api;
  const node = app.graph.getNodeById(nodeId);
  const before = node.__adastateStatus ?? null;
  api.dispatchEvent(new CustomEvent("adastate.chunk", { detail: {
    node: String(nodeId), workflow_id: "another-workflow", chunk: 1, total: 9, frames: 9,
    filename: "x.mp4", preview: { filename: "x.jpg", subfolder: "", type: "temp" } } }));
  const otherWorkflow = node.__adastateStatus ?? null;
  api.dispatchEvent(new CustomEvent("adastate.chunk", { detail: {
    node: String(nodeId), workflow_id: app.graph.id, chunk: 2, total: 9, frames: 21,
    filename: "x.mp4" } }));
  return JSON.stringify({ before, otherWorkflow, own: node.__adastateStatus ?? null });
}
"""

COUNT_EVENTS = r"""
() => {
  const api = window.comfyAPI?.api?.api ?? app.api;
  window.__adastateEvents = [];
  api.addEventListener("adastate.chunk", (e) => window.__adastateEvents.push(e.detail));
  return true;
}
"""


def test_previews_reach_only_the_node_that_made_them(server, chrome, tmp_path):
    """Two tabs with two workflows whose Generate Stream nodes share an id: a run queued in
    one tab shows its chunk previews on that tab's node only."""
    a, b = chrome.tab(), chrome.tab()
    for tab in (a, b):
        webapp.open_app(tab, server)
        tab.call_function(COUNT_EVENTS)
    webapp.load(a, json.loads((UI / "AdaState anchor comparison.json").read_text()),
                tiny(7), SWAPS)  # fmt: skip
    webapp.load(b, json.loads((UI / "AdaState 30s stream.json").read_text()),
                {**tiny(int(time.time()) % 100000), "chunks": 4}, SWAPS)  # fmt: skip
    gen_b = json.loads(b.eval(
        "JSON.stringify(app.graph.nodes.find(n => n.type === 'AdaState_Generate').id)"))  # fmt: skip
    type_a = a.eval(f"app.graph.getNodeById({gen_b})?.type ?? null")
    assert type_a == "AdaState_Generate"  # the same id is a Generate Stream node in tab A too

    state, live = run_watching(b)
    assert state["status"] == "success", json.dumps(state.get("detail") or state)[:3000]
    assert live == {gen_b}, live
    assert json.loads(a.eval("JSON.stringify(window.__adastateEvents.length)")) == 0
    assert json.loads(b.eval("JSON.stringify(window.__adastateEvents.length)")) == 4  # chunks
    in_a = webapp.media(a, OUTPUT_TYPES)[str(gen_b)]
    assert in_a["status"] is None and "adastate_live_preview" not in in_a["widgets"], in_a
    assert in_a["videos"] == [], in_a
    in_b = wait_for_player(b, gen_b)
    assert in_b["status"].startswith("saved ") and len(in_b["videos"]) == 1, in_b

    # inside one tab: an event for another workflow (a workflow tab not shown) is ignored
    got = json.loads(b.call_function(OTHER_WORKFLOW_EVENT, gen_b))
    assert got["otherWorkflow"] == got["before"], got
    assert got["own"].startswith("chunk 2/9"), got
    a.screenshot(shots(tmp_path) / "two_tabs_a.png")
    b.screenshot(shots(tmp_path) / "two_tabs_b.png")
    for tab in (a, b):
        assert ours(tab.error_texts()) == [], tab.error_texts()


UNDER_MENU = r"""
() => {
  const c = app.canvas, g = app.graph;
  const r = c.canvas.getBoundingClientRect();
  const th = LiteGraph.NODE_TITLE_HEIGHT;
  const hidden = [];
  let shown = 0;
  for (const n of g.nodes) {
    const [x, y] = c.ds.convertOffsetToCanvas([n.pos[0] + 8, n.pos[1] - th + 4]);
    const px = r.left + x, py = r.top + y;
    if (px < 0 || px > innerWidth || py > innerHeight) continue;  // off to the side: scroll
    // the top of the view: nothing (menu bar, tabs) may cover a title there; lower down the
    // canvas has its own floating tools (zoom buttons, minimap) that any node may pass under
    if (py > r.top + r.height / 4) { shown++; continue; }
    const el = document.elementFromPoint(px, Math.max(py, 0));
    if (py < r.top || el !== c.canvas) hidden.push([n.id, n.title, Math.round(py), el?.tagName]);
    else shown++;
  }
  return JSON.stringify({ hidden, shown });
}
"""


@pytest.mark.parametrize("name", sorted(p.stem for p in UI.glob("*.json")))
def test_workflow_opens_with_every_title_visible(server, chrome, tmp_path, name):
    """A workflow opened from the template browser shows its top row's titles, not under the
    menu bar; nothing overlaps and the canvas draws."""
    tab = chrome.tab()
    webapp.open_app(tab, server)
    startup = len(tab.error_texts())
    webapp.load(tab, json.loads((UI / f"{name}.json").read_text()), {})
    tab.pump(1.0)
    got = json.loads(tab.call_function(UNDER_MENU))
    tab.screenshot(shots(tmp_path) / f"opened_{name.replace(' ', '_')}.png")
    assert got["hidden"] == [], got
    assert got["shown"] >= 4, got
    report = webapp.canvas_report(tab)
    assert report["alive"] and report["error"] is None and report["overlaps"] == [], report
    assert new_errors(tab, startup) == []


BUTTONS = r"""
() => JSON.stringify([...document.querySelectorAll("button")].map((b) => ({
  text: b.innerText.trim(), label: b.getAttribute("aria-label") ?? "", title: b.title ?? "",
  disabled: b.disabled,
})))
"""


def test_missing_models_dialog_offers_the_files(server, chrome):
    """A new user opens a workflow without the models: ComfyUI's missing-models dialog lists
    the three files with their downloads. Frontends that only download .safetensors (ComfyUI
    0.3.x) grey out self_forcing_dmd.pt; the workflow's note then gives the manual route."""
    placeholders = [server.tmp / "models" / f for f in (
        "diffusion_models/self_forcing_dmd.pt",
        "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "vae/wan_2.1_vae.safetensors")]  # fmt: skip
    for p in placeholders:
        p.unlink()
    try:
        tab = chrome.tab()
        webapp.open_app(tab, server, settings={**webapp.SETTINGS,
                        "Comfy.Workflow.ShowMissingModelsWarning": True})  # fmt: skip
        wf = json.loads((UI / "AdaState 30s stream.json").read_text())
        tab.call_function("async (wf) => { await app.loadGraphData(wf); return 1; }", wf)
        tab.pump(2.0)
        # newer frontends first show a toast with a button that opens the list
        tab.eval("[...document.querySelectorAll('button')]"
                 ".find((b) => b.innerText.includes('Show missing models'))?.click() ?? 0")  # fmt: skip
        tab.pump(2.0)
        text = tab.eval("document.body.innerText")
        buttons = json.loads(tab.call_function(BUTTONS))
    finally:
        for p in placeholders:
            p.touch()
    downloads = {}
    for hint in wf["nodes"]:
        for model in hint["properties"].get("models", []):
            assert model["name"] in text, model["name"]
            found = [b for b in buttons if b["text"].startswith("Download") and (
                model["name"] in b["label"] or b["title"] == model["url"])]  # fmt: skip
            assert found, (model["name"], buttons)
            downloads[model["name"]] = not found[0]["disabled"]
    assert downloads["umt5_xxl_fp8_e4m3fn_scaled.safetensors"]
    assert downloads["wan_2.1_vae.safetensors"]
    if not downloads["self_forcing_dmd.pt"]:  # this frontend downloads only .safetensors
        assert "adastate convert self_forcing_dmd.pt" in text
        assert "gdhe17/Self-Forcing" in text
