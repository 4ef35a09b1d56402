"""End to end in a real ComfyUI: every example workflow (workflows/api/*.json), shrunk to tiny
sizes and tiny random models, runs headless through POST /prompt and leaves its outputs.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python -m pytest -m comfyui tests/test_comfyui_host.py

ComfyUI's venv: tests/comfy_host/setup_comfyui.sh COMFYUI_DIR VENV_DIR. CLIPLoader (no small
umT5 exists) is replaced by the test pack's text-encoder stand-in; CLIPTextEncode and
Prompt Schedule then encode through it unchanged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "comfy_host"))
import host  # noqa: E402

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(
        not os.environ.get("COMFYUI_DIR"),
        reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its venv's python)",
    ),
]

API = REPO / "workflows" / "api"
OUTPUT_NODES = {"AdaState_Generate", "AdaState_VideoCombine", "PreviewImage"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy_dir = Path(os.environ["COMFYUI_DIR"]).resolve()
    if not (comfy_dir / "main.py").is_file():
        pytest.fail(f"COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no main.py)")
    tmp = tmp_path_factory.mktemp("comfy_host")
    host.write_models(tmp / "models")
    config = host.write_config(tmp, comfy_dir)
    srv = host.Server(comfy_dir, tmp)
    try:
        srv.start(config)
        yield srv
    finally:
        srv.stop()


def test_pack_and_test_pack_loaded(server):
    info = server.get("/object_info")
    ours = {k for k in info if k.startswith("AdaState_")}
    assert len(ours) == 10, sorted(ours)
    assert {"AdaStateTest_CLIP", "AdaStateTest_Conditioning"} <= set(info)
    names = info["AdaState_LoadModel"]["input"]["required"]["dit_name"][0]
    assert host.DIT_NAME in names
    assert host.VAE_NAME in info["VAELoader"]["input"]["required"]["vae_name"][0]
    assert "IMPORT FAILED: adastate" not in server.tail(400)


@pytest.mark.parametrize("name", sorted(p.stem for p in API.glob("*.json")))
def test_example_workflow_runs(server, name):
    prompt = host.shrink(json.loads((API / f"{name}.json").read_text()))
    entry = server.run(prompt)
    status = entry["status"]
    assert status["status_str"] == "success", _error(status)
    outputs = entry["outputs"]
    expected = {k for k, v in prompt.items() if v["class_type"] in OUTPUT_NODES}
    assert expected <= set(outputs), (sorted(expected), sorted(outputs))
    for node_id in expected:
        items = outputs[node_id].get("images") or []
        assert items, (node_id, outputs[node_id])
        for item in items:
            path = server.file_of(item)
            assert path.is_file() and path.stat().st_size > 0, path
            if prompt[node_id]["class_type"] != "PreviewImage":
                assert outputs[node_id].get("animated") in ([True], (True,)), outputs[node_id]
                frames, width, height = host.video_frames(path)
                assert frames > 1 and width > 0 and height > 0, (path, frames, width, height)
    if name == "adastate_5s_granular":  # 7 chunks of 3 latent frames: 81 frames
        (item,) = outputs[_id(prompt, "AdaState_VideoCombine")]["images"]
        assert host.video_frames(server.file_of(item)) == (81, host.WIDTH, host.HEIGHT)
    if name == "adastate_anchor_comparison":  # 2 x 2 grid with 8 px spacing
        (item,) = outputs[_id(prompt, "AdaState_VideoCombine")]["images"]
        _, width, height = host.video_frames(server.file_of(item))
        assert (width, height) == (2 * host.WIDTH + 8, 2 * host.HEIGHT + 8)


def test_identical_prompt_is_served_from_cache(server):
    prompt = host.shrink(json.loads((API / "adastate_30s_stream.json").read_text()))
    first = server.run(prompt)
    second = server.run(prompt)
    assert second["status"]["status_str"] == "success"
    cached = [m for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and set(cached[0][1]["nodes"]) >= set(prompt), cached
    assert first["outputs"].keys() >= second["outputs"].keys()


def _error(status: dict) -> str:
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            trace = "".join(data.get("traceback") or [])
            return f"{data.get('node_type')} (node {data.get('node_id')}): {data.get('exception_type')}: {data.get('exception_message')}\n{trace[-3000:]}"
    return json.dumps(status)[-2000:]


def _id(prompt: dict, cls: str) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == cls)


FRONTEND_CHECK = """
(async () => {
  const api = window.comfyAPI?.api?.api ?? window.app.api;
  const node = LiteGraph.createNode("AdaState_Generate");
  app.graph.add(node);
  api.dispatchEvent(new CustomEvent("adastate.chunk", {detail: {
    node: node.id, chunk: 1, total: 3, frames: 21, filename: "AdaState_00001.mp4",
    preview: {filename: "adastate_preview_7.jpg", subfolder: "", type: "temp"}}}));
  const live = node.__adastate?.holder?.querySelector("img")?.src ?? null;
  const label = node.__adastate?.label?.textContent ?? null;
  node.onExecuted({images: [{filename: "AdaState_00001.mp4", subfolder: "", type: "output"}],
                   animated: [true]});
  const video = node.__adastate?.holder?.querySelector("video")?.src ?? null;
  return JSON.stringify({live, label, video});
})()
"""


def test_frontend_extension_in_the_real_web_app(server):
    """Our js/ extension loads in ComfyUI's frontend (headless Chromium), shows the chunk
    preview an `adastate.chunk` event points at, and plays a finished video in the node."""
    browser_mod = pytest.importorskip("browser")
    pytest.importorskip("websocket", reason="pip install websocket-client")
    if browser_mod.chromium() is None:
        pytest.skip("no chromium (apt-get install chromium)")
    listed = server.get("/extensions")
    assert "/extensions/adastate/adastate.js" in listed
    b = browser_mod.Browser(port=host.free_port())
    try:
        b.call("Page.navigate", url=server.url + "/")
        names = b.wait_for(
            "window.app?.extensions ? JSON.stringify(window.app.extensions.map(e => e.name)) : null"
        )
        assert "adastate.streaming" in json.loads(names)
        b.wait_for("window.LiteGraph?.registered_node_types?.AdaState_Generate ? 1 : 0")
        got = json.loads(b.eval(FRONTEND_CHECK))
        assert "filename=adastate_preview_7.jpg" in got["live"] and "type=temp" in got["live"]
        assert got["label"].startswith("chunk 2/3")
        assert "filename=AdaState_00001.mp4" in got["video"] and "type=output" in got["video"]
        ours = [e for e in b.errors if "adastate" in json.dumps(e).lower()]
        assert ours == [], ours
    finally:
        b.close()
