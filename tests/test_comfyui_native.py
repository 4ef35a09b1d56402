"""AdaState from MODEL in a real ComfyUI: ComfyUI's own loaders, LoRA and low-VRAM loading
feed the stream, with the numbers of our own loader on the same (merged / dequantised)
weights. Runs on the pinned ComfyUI and the current one.

    COMFYUI_DIR=/path/to/ComfyUI COMFYUI_PYTHON=/path/to/venv/bin/python \\
        [COMFYUI_GGUF=/path/to/ComfyUI-GGUF] python -m pytest -m comfyui tests/test_comfyui_native.py

GGUF: with COMFYUI_GGUF pointing at a ComfyUI-GGUF checkout (and the `gguf` package in both
Pythons) a Q8_0 file written by the test goes through its Unet Loader (GGUF); skipped otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from adastate_core.stream import StreamConfig

from conftest import REAL_COMFYUI, REPO

sys.path.insert(0, str(REPO / "tests" / "comfy_host"))
import host  # noqa: E402

pytestmark = REAL_COMFYUI

GGUF_DIR = os.environ.get("COMFYUI_GGUF")
CHUNKS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    extra = [GGUF_DIR] if GGUF_DIR else []
    srv = host.start_server(tmp_path_factory.mktemp("comfy_native"), extra_nodes=extra)
    try:
        yield srv
    finally:
        srv.stop()


def stream_graph(model_nodes: dict, model_ref: list, name: str, native: bool = True,
                 attention: str = "comfy") -> dict:  # fmt: skip
    """model nodes -> (AdaState from MODEL) -> Generate Stream (4 chunks) -> frames as .npy,
    and a report of the MODEL after the run."""
    g = {k: dict(v) for k, v in model_nodes.items()}
    adastate = model_ref
    if native:
        g["90"] = {"class_type": "AdaState_NativeModel",
                   "inputs": {"model": model_ref, "attention": attention}}  # fmt: skip
        adastate = ["90", 0]
    frames = StreamConfig(height=host.HEIGHT, width=host.WIDTH).frames_after(CHUNKS)
    g["91"] = {"class_type": "AdaStateTest_Conditioning", "inputs": {"seed": 3, "length": 12}}
    g["92"] = {"class_type": "VAELoader", "inputs": {"vae_name": host.VAE_NAME}}
    g["93"] = {
        "class_type": "AdaState_Generate",
        "inputs": {
            "model": adastate, "positive": ["91", 0], "vae": ["92", 0],
            "width": host.WIDTH, "height": host.HEIGHT, "seconds": frames / 16,
            "anchor_policy": "adaptive", "chunk_frames": 3, "state_frames": 1,
            "window_frames": 3, "anchor_frames": 1, "steps": "1000,750,500,250",
            "shift": 5.0, "seed": 7, "format": "mp4", "crf": 19,
            "filename_prefix": f"native/{name}", "preview_frames": 1000,
        },
    }  # fmt: skip
    g["94"] = {
        "class_type": "AdaStateTest_SaveTensor",
        "inputs": {"images": ["93", 0], "name": name},
    }
    if native:
        g["95"] = {"class_type": "AdaStateTest_ModelReport",
                   "inputs": {"model": model_ref, "after": ["93", 0]}}  # fmt: skip
    return g


def unet(name: str) -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}}
    }


def with_lora(nodes: dict, source: list) -> dict:
    lora = {"class_type": "LoraLoaderModelOnly",
            "inputs": {"model": source, "lora_name": host.LORA, "strength_model": host.LORA_STRENGTH}}  # fmt: skip
    return {**nodes, "2": lora}


def run(server, graph: dict, name: str) -> tuple[np.ndarray, dict | None]:
    entry = server.run(graph)
    assert entry["status"]["status_str"] == "success", host.error_text(entry["status"])
    frames = np.load(server.output / f"{name}.npy")
    assert frames.shape[0] == StreamConfig(height=host.HEIGHT, width=host.WIDTH).frames_after(
        CHUNKS
    )
    report = None
    if "95" in entry["outputs"]:
        import json

        report = json.loads(entry["outputs"]["95"]["text"][0])
    return frames, report


@pytest.fixture(scope="module")
def reference(server):
    """Our own loader on the LoRA-merged weights (fp32, official layout)."""
    loader = {"1": {"class_type": "AdaState_LoadModel",
                    "inputs": {"dit_name": host.NATIVE_MERGED, "weight_dtype": "default", "attention": "sdpa"}}}  # fmt: skip
    frames, _ = run(server, stream_graph(loader, ["1", 0], "reference", native=False), "reference")
    return frames


@pytest.fixture(scope="module")
def lora_full(server):
    graph = stream_graph(with_lora(unet(host.NATIVE), ["1", 0]), ["2", 0], "lora_full")
    return run(server, graph, "lora_full")


def test_native_loader_with_lora_equals_merged_weights(reference, lora_full):
    frames, report = lora_full
    assert report["class"] in ("WanModel", "CausalWanModel") and report["patches"] > 0
    assert report["dtype"] == "torch.float32" and report["cast_layers"] == 0, report
    err = float(np.abs(frames - reference).max())
    print(f"\nnative + LoRA vs merged weights: max abs {err:.2e} ({report})")
    assert err <= 1e-4, err


def test_low_vram_loading_gives_the_same_frames(server, lora_full):
    nodes = with_lora(unet(host.NATIVE), ["1", 0])
    nodes["3"] = {"class_type": "AdaStateTest_LowVram", "inputs": {"model": ["2", 0]}}
    frames, report = run(server, stream_graph(nodes, ["3", 0], "lora_lowvram"), "lora_lowvram")
    assert report["cast_layers"] > 0 and report["lowvram"], report  # really partially loaded
    err = float(np.abs(frames - lora_full[0]).max())
    print(f"\nlow-VRAM vs full load: max abs {err:.2e} ({report})")
    assert err <= 1e-6


def test_causal_ar_file_gives_the_same_frames(server):
    plain, _ = run(server, stream_graph(unet(host.NATIVE), ["1", 0], "plain"), "plain")
    ar, report = run(server, stream_graph(unet(host.NATIVE_AR), ["1", 0], "causal_ar"), "causal_ar")
    comfy_has_ar = (Path(server.comfy_dir) / "comfy" / "ldm" / "wan" / "ar_model.py").is_file()
    assert report["class"] == ("CausalWanModel" if comfy_has_ar else "WanModel"), report
    err = float(np.abs(ar - plain).max())
    print(f"\ncausal_ar file vs plain: max abs {err:.2e} ({report['class']})")
    assert err <= 1e-6


def test_sdpa_and_comfy_attention_agree(server):
    a, _ = run(
        server,
        stream_graph(unet(host.NATIVE), ["1", 0], "attn_sdpa", attention="sdpa"),
        "attn_sdpa",
    )
    b, _ = run(server, stream_graph(unet(host.NATIVE), ["1", 0], "attn_comfy"), "attn_comfy")
    err = float(np.abs(a - b).max())
    print(f"\ncomfy attention vs sdpa: max abs {err:.2e}")
    assert err <= 1e-4


@pytest.mark.skipif(not GGUF_DIR, reason="set COMFYUI_GGUF to a ComfyUI-GGUF checkout")
def test_gguf_q8_equals_its_dequantised_weights(server):
    loader = {"1": {"class_type": "AdaState_LoadModel",
                    "inputs": {"dit_name": host.NATIVE_GGUF_REF, "weight_dtype": "default", "attention": "sdpa"}}}  # fmt: skip
    ref, _ = run(server, stream_graph(loader, ["1", 0], "gguf_ref", native=False), "gguf_ref")
    gguf = {"1": {"class_type": "UnetLoaderGGUFAdvanced",
                  "inputs": {"unet_name": host.NATIVE_GGUF, "dequant_dtype": "float32",
                             "patch_dtype": "default", "patch_on_device": False}}}  # fmt: skip
    frames, report = run(server, stream_graph(gguf, ["1", 0], "gguf"), "gguf")
    assert report["class"] == "WanModel", report
    err = float(np.abs(frames - ref).max())
    print(f"\nGGUF Q8_0 vs its dequantised weights: max abs {err:.2e}")
    assert err <= 1e-4
