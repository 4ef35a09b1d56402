"""End to end in a real ComfyUI, through its HTTP API: every example workflow (workflows/api),
shrunk to tiny sizes and tiny random models, runs headless through POST /prompt and leaves its
outputs; re-runs never overwrite; the chunk-by-chunk graph decodes each chunk once; the
chunk-by-chunk graph, Generate Stream and the `adastate` CLI give the same frames.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        python -m pytest -m comfyui tests/test_comfyui_host.py

ComfyUI's venv: tests/comfy_host/setup_comfyui.sh COMFYUI_DIR VENV_DIR. CLIPLoader (no small
umT5 exists) is replaced by the test pack's text-encoder stand-in; CLIPTextEncode and
Prompt Schedule then encode through it unchanged. The browser side is test_comfyui_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adastate_core.io import to_uint8_frames

from conftest import REAL_COMFYUI, REPO

sys.path.insert(0, str(REPO / "tests" / "comfy_host"))
import host  # noqa: E402

pytestmark = REAL_COMFYUI

API = REPO / "workflows" / "api"
OUTPUT_NODES = {"AdaState_Generate", "AdaState_VideoCombine", "PreviewImage"}
GRANULAR = "AdaState 5s chunk by chunk"
STREAM = "AdaState 30s stream"
COMPARE = "AdaState anchor comparison"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = host.start_server(tmp_path_factory.mktemp("comfy_host"))
    try:
        yield srv
    finally:
        srv.stop()


def workflow(name: str, **changes) -> dict:
    return host.shrink(json.loads((API / f"{name}.json").read_text()), **changes)


def test_pack_and_test_pack_loaded(server):
    info = server.get("/object_info")
    ours = {k for k in info if k.startswith("AdaState_")}
    assert len(ours) == 13, sorted(ours)
    assert {"AdaStateTest_CLIP", "AdaStateTest_Conditioning", "AdaStateTest_DecodeStats"} <= set(
        info
    )
    names = info["AdaState_LoadModel"]["input"]["required"]["dit_name"][0]
    assert host.DIT_NAME in names
    assert host.VAE_NAME in info["VAELoader"]["input"]["required"]["vae_name"][0]
    assert "IMPORT FAILED: adastate" not in server.tail(400)
    # the decoder chain output, as the frontend sees it
    assert info["AdaState_Decode"]["output"] == ["IMAGE", "ADASTATE_DECODER"]
    templates = server.get("/workflow_templates")
    assert sorted(next(v for k, v in templates.items() if "adastate" in k.lower())) == sorted(
        p.stem for p in (REPO / "workflows").glob("*.json")
    )


@pytest.mark.parametrize("name", sorted(p.stem for p in API.glob("*.json")))
def test_example_workflow_runs(server, name):
    prompt = workflow(name)
    entry = server.run(prompt)
    status = entry["status"]
    assert status["status_str"] == "success", host.error_text(status)
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
                assert item["filename"].endswith("_.mp4"), item  # ComfyUI's numbering
                assert outputs[node_id].get("animated") in ([True], (True,)), outputs[node_id]
                frames, width, height = host.video_frames(path)
                assert frames > 1 and width > 0 and height > 0, (path, frames, width, height)
    if name == GRANULAR:  # 7 chunks of 3 latent frames: 81 frames
        (item,) = outputs[host.node_of(prompt, "AdaState_VideoCombine")]["images"]
        assert host.video_frames(server.file_of(item)) == (81, host.WIDTH, host.HEIGHT)
    if name == COMPARE:  # 2 x 2 grid with 8 px spacing
        (item,) = outputs[host.node_of(prompt, "AdaState_VideoCombine")]["images"]
        _, width, height = host.video_frames(server.file_of(item))
        assert (width, height) == (2 * host.WIDTH + 8, 2 * host.HEIGHT + 8)


def test_identical_prompt_is_served_from_cache(server):
    prompt = workflow(STREAM)
    first = server.run(prompt)
    second = server.run(prompt)
    assert second["status"]["status_str"] == "success"
    cached = [m for m in second["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and set(cached[0][1]["nodes"]) >= set(prompt), cached
    assert first["outputs"].keys() >= second["outputs"].keys()


def _saved(server, entry) -> dict[str, Path]:
    out = {}
    for node_id, output in entry["outputs"].items():
        for item in output.get("images") or []:
            if item.get("type") == "output":
                out[node_id] = server.file_of(item)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rerun_with_another_seed_keeps_every_earlier_file(server):
    """An artist re-queues the anchor comparison with a new seed: the first run's five videos
    are untouched and the second run's are new, distinct files."""
    runs = []
    for seed in (101, 202):
        prompt = workflow(COMPARE)
        for entry in prompt.values():
            if "seed" in entry["inputs"]:
                entry["inputs"]["seed"] = seed
        result = server.run(prompt)
        assert result["status"]["status_str"] == "success", host.error_text(result["status"])
        files = _saved(server, result)
        assert len(files) == 5, files  # 4 Generate + Video Combine
        runs.append({k: (p, _digest(p)) for k, p in files.items()})
    first, second = runs
    for node_id, (path, digest) in first.items():
        assert path.is_file() and _digest(path) == digest, f"{path} was changed by the re-run"
        other, other_digest = second[node_id]
        assert other != path and other.is_file(), (path, other)
        assert other_digest != digest, f"{other} has the first run's content"
        # the counter advanced: name_0000k_.mp4 -> a larger k
        assert other.name.rsplit("_", 2)[-2] > path.name.rsplit("_", 2)[-2], (path, other)


def test_granular_graph_decodes_each_chunk_once(server):
    """Seven Decode Chunk nodes chained by their `decoder`: 7 chunk decodes in whatever order
    ComfyUI runs the graph, and one decoder cache held afterwards."""
    stats = {"99": {"class_type": "AdaStateTest_DecodeStats", "inputs": {"reset": True}}}
    assert server.run(stats)["status"]["status_str"] == "success"
    prompt = workflow(GRANULAR)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", host.error_text(entry["status"])
    after = server.run(stats)
    counts = json.loads(after["outputs"]["99"]["text"][0])
    assert counts == {"decoded_chunks": 7, "caches": 1}, counts


def _png_frames(paths: list[Path]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.array(Image.open(p).convert("RGB")) for p in sorted(paths)])


def test_granular_generate_and_cli_give_identical_png_frames(server, tmp_path):
    """One seed and prompt three ways, compared losslessly (PNG): the chunk-by-chunk graph and
    Generate Stream in the real host, and `adastate generate` from the shell. (Their mp4 files
    differ slightly: x264 encodes a video written chunk by chunk, as Generate Stream writes it,
    differently from one written at once; the frames going in are identical.)"""
    seed = 4242
    granular = workflow(GRANULAR)
    combine = host.node_of(granular, "AdaState_VideoCombine")
    frames_in = granular[combine]["inputs"]["images"]
    granular[combine] = {"class_type": "SaveImage",
                         "inputs": {"images": frames_in, "filename_prefix": "parity/granular"}}  # fmt: skip
    granular["98"] = {"class_type": "AdaStateTest_SaveTensor",
                      "inputs": {"images": frames_in, "name": "parity_granular"}}  # fmt: skip
    stream = workflow(STREAM)
    gen = host.node_of(stream, "AdaState_Generate")
    stream[gen]["inputs"].update(chunks=7, preview_frames=1000)
    stream["99"] = {"class_type": "SaveImage",
                    "inputs": {"images": [gen, 0], "filename_prefix": "parity/generate"}}  # fmt: skip
    stream["98"] = {"class_type": "AdaStateTest_SaveTensor",
                    "inputs": {"images": [gen, 0], "name": "parity_generate"}}  # fmt: skip
    for prompt in (granular, stream):
        for entry in prompt.values():
            if "seed" in entry["inputs"] and entry["class_type"].startswith("AdaState_"):
                entry["inputs"]["seed"] = seed
        result = server.run(prompt)
        assert result["status"]["status_str"] == "success", host.error_text(result["status"])
    folder = server.output / "parity"
    a = _png_frames(list(folder.glob("granular_*.png")))
    b = _png_frames(list(folder.glob("generate_*.png")))
    assert a.shape == (81, host.HEIGHT, host.WIDTH, 3)
    assert np.array_equal(a, b), f"max difference {np.abs(a.astype(int) - b.astype(int)).max()}"
    exact_a = np.load(server.output / "parity_granular.npy")
    exact_b = np.load(server.output / "parity_generate.npy")
    assert exact_a.dtype == np.float32 and np.array_equal(exact_a, exact_b)  # bit for bit

    # the CLI: the same files; the stand-in's embedding of the prompt put in its prompt cache
    text_node = host.node_of(granular, "CLIPTextEncode")
    prompt_text = granular[text_node]["inputs"]["text"]
    encoder = host.write_tiny_text_encoder(tmp_path / "umt5_tiny.safetensors")
    cache = tmp_path / "embeddings"
    host.cache_stand_in_embedding(cache, encoder, prompt_text)
    out = tmp_path / "cli" / "clip.png"
    models = server.tmp / "models"
    cmd = [
        sys.executable, "-m", "adastate_core", "generate",
        "--dit", models / "diffusion_models" / host.DIT_NAME,
        "--vae", models / "vae" / host.VAE_NAME,
        "--text-encoder", encoder, "--cache-dir", cache, "--device", "cpu",
        "--prompt", prompt_text, "--chunks", "7", "--seed", seed,
        "--width", host.WIDTH, "--height", host.HEIGHT, "--out", out,
    ]  # fmt: skip
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    c = _png_frames(list(out.parent.glob("clip_*.png")))
    # the CLI's PNGs are the host's frames through AdaState's own 8-bit conversion (rounding;
    # SaveImage truncates, so its PNGs are 0 or 1 below these)
    host_frames = to_uint8_frames(torch.from_numpy(exact_a))
    assert np.array_equal(host_frames, c), np.abs(host_frames.astype(int) - c.astype(int)).max()
    assert set(np.unique(c.astype(int) - a.astype(int))) <= {0, 1}
