"""The ComfyUI node layer against a fake host (tests/fake_comfy) on tiny random models:
contracts (ids, tooltips, widget order), the granular graph == Generate Stream == the library
pipeline, exact seams in any decode order, re-runs with cached outputs, Cancel, analysis nodes,
and the errors users can hit."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

pytest.importorskip("av")

from fake_comfy import FakeCLIP, FakeVAE, InterruptProcessingException, install  # noqa: E402

import nodes  # noqa: E402
from adastate_core.analysis import attention_shares  # noqa: E402
from adastate_core.errors import AdaStateError  # noqa: E402
from adastate_core.io import (  # noqa: E402
    count_frames,
    open_writer,
    read_frames,
    read_metadata,
    to_uint8_frames,
)
from adastate_core.model import load_dit  # noqa: E402
from adastate_core.model.random_weights import TINY, save_random_checkpoint  # noqa: E402
from adastate_core.pipeline import generate  # noqa: E402
from adastate_core.stream import StreamConfig, init_stream  # noqa: E402
from adastate_core.vae import LATENT_MEAN, LATENT_STD, load_vae  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict as random_vae  # noqa: E402
from nodes import NODE_CLASS_MAPPINGS as NODES  # noqa: E402
from nodes.common import preview_indices  # noqa: E402
from nodes.decode_nodes import MEMO  # noqa: E402

from conftest import REPO  # noqa: E402

W, H, SEED, CHUNKS = 96, 64, 7, 4
FRAMES = StreamConfig(height=H, width=W).frames_after(CHUNKS)  # 45
SECONDS = FRAMES / 16  # Generate Stream: exactly CHUNKS chunks
STREAM_ARGS = dict(
    width=W, height=H, anchor_policy="adaptive", chunk_frames=3, state_frames=1,
    window_frames=3, anchor_frames=1, steps="1000,750,500,250", shift=5.0, seed=SEED,
)  # fmt: skip

INPUT_ORDER = [
    ("AdaState_LoadModel", ["dit_name", "weight_dtype", "attention"]),
    ("AdaState_InitCache", ["model", "positive", "width", "height", "anchor_policy",
                            "chunk_frames", "state_frames", "window_frames", "anchor_frames",
                            "steps", "shift", "seed"]),
    ("AdaState_DenoiseChunk", ["model", "stream", "positive", "recache"]),
    ("AdaState_UpdateState", ["model", "stream", "chunk"]),
    ("AdaState_Decode", ["vae", "chunk", "decoder"]),
    ("AdaState_VideoCombine", ["images", "frame_rate", "format", "crf", "filename_prefix",
                               "save_output"]),
    ("AdaState_Generate", ["model", "positive", "vae", "width", "height", "seconds",
                           "anchor_policy", "chunk_frames", "state_frames", "window_frames",
                           "anchor_frames", "steps", "shift", "seed", "format", "crf",
                           "filename_prefix", "preview_frames", "prompts", "chunks", "stream"]),
    ("AdaState_PromptSchedule", ["clip", "text", "recache"]),
    ("AdaState_DecodeState", ["vae", "chunk"]),
    ("AdaState_AttentionProbe", ["model", "stream", "step"]),
    ("AdaState_NativeModel", ["model", "attention"]),
    ("AdaState_PrimeStream", ["model", "stream", "vae", "images", "output"]),
    ("AdaState_Evaluate", ["fps", "labels", "images", "video_1", "video_2", "video_3", "video_4"]),
]  # fmt: skip


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    dit = root / "self_forcing_dmd.pt"
    save_random_checkpoint(dit, TINY, seed=1, layout="self-forcing")
    vae = random_vae(dim=8, seed=2)
    save_file(vae, str(root / "wan_2.1_vae.safetensors"))
    return {"dit": dit, "vae_path": root / "wan_2.1_vae.safetensors", "vae_state": vae}


@pytest.fixture
def host(monkeypatch, tmp_path, tiny_files):
    host = install(monkeypatch, tmp_path / "comfy")
    folder = host.models_dir / "diffusion_models"
    folder.mkdir()
    (folder / "self_forcing_dmd.pt").symlink_to(tiny_files["dit"])
    (folder / "notes.txt").write_text("not a model")
    MEMO.clear()
    return host


@pytest.fixture
def model(host):
    return NODES["AdaState_LoadModel"]().load("self_forcing_dmd.pt", "default", "sdpa")[0]


@pytest.fixture(scope="module")
def vae(tiny_files):
    return FakeVAE(tiny_files["vae_state"])


def conditioning(seed: int = 0, width: int = 32) -> list:
    rows = torch.randn(1, 16, width, generator=torch.Generator().manual_seed(seed))
    rows[:, 10:] = 0  # padding rows, as CLIPTextEncode gives them
    return [[rows, {"pooled_output": None}]]


def run(node_id: str, *args, **kwargs):
    cls = NODES[node_id]
    out = getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    return out["result"] if isinstance(out, dict) else out


def granular(model, positive, chunks=CHUNKS, switch: dict | None = None, **settings):
    """Init Cache -> (Denoise Chunk -> Update State) x chunks; -> (streams, node chunks)."""
    stream = run("AdaState_InitCache", model, positive, **{**STREAM_ARGS, **settings})[0]
    streams, made = [stream], []
    for k in range(chunks):
        extra = {"positive": switch[k]} if switch and k in switch else {}
        chunk, _ = run("AdaState_DenoiseChunk", model, stream, **extra)
        stream = run("AdaState_UpdateState", model, stream, chunk)[0]
        made.append(chunk)
        streams.append(stream)
    return streams, made


def decode_all(vae, chunks, order=None) -> torch.Tensor:
    order = range(len(chunks)) if order is None else order
    frames = {k: run("AdaState_Decode", vae, chunks[k])[0] for k in order}
    return torch.cat([frames[k] for k in range(len(chunks))])


def checksum(*values) -> str:
    h = hashlib.sha256()

    def visit(v):
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif hasattr(v, "__dataclass_fields__"):
            for name in v.__dataclass_fields__:
                visit(getattr(v, name))
        elif isinstance(v, list | tuple):
            for x in v:
                visit(x)
        elif isinstance(v, dict):
            for x in v.values():
                visit(x)
        else:
            h.update(repr(v).encode())

    for v in values:
        visit(v)
    return h.hexdigest()


def generate_node(model, positive, vae, **kwargs):
    args = dict(
        seconds=SECONDS, **STREAM_ARGS, format="mp4", crf=19, filename_prefix="AdaState",
        preview_frames=1000,
    )  # fmt: skip
    args.update(kwargs)
    cls = NODES["AdaState_Generate"]
    return cls().generate(model, positive, vae, **args, unique_id="12")


# -- contracts -----------------------------------------------------------------------------------


def test_node_contracts(host):
    assert len(NODES) == 13 and set(NODES) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert all(k.startswith("AdaState_") for k in NODES)
    names = nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert names["AdaState_VideoCombine"] == "Video Combine (AdaState)"
    assert names["AdaState_Generate"] == "Generate Stream (AdaState)"
    assert len(set(names.values())) == 13
    for node_id, cls in NODES.items():
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, decl in spec.get(section, {}).items():
                assert len(decl) == 2 and decl[1].get("tooltip"), (node_id, name)
                if name == "seed":
                    assert decl[1]["control_after_generate"] is True
        n = len(cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == n == len(cls.OUTPUT_TOOLTIPS) and all(cls.OUTPUT_TOOLTIPS)
        assert cls.CATEGORY.startswith("AdaState") and cls.DESCRIPTION
        assert callable(getattr(cls, cls.FUNCTION))
        sink = node_id in ("AdaState_VideoCombine", "AdaState_Generate", "AdaState_Evaluate")
        assert getattr(cls, "OUTPUT_NODE", False) is sink
    assert NODES["AdaState_LoadModel"].INPUT_TYPES()["required"]["dit_name"][0] == [
        "self_forcing_dmd.pt"
    ]


def test_widget_order_snapshot(host):
    got = [
        (node_id, [*cls.INPUT_TYPES()["required"], *cls.INPUT_TYPES().get("optional", {})])
        for node_id, cls in NODES.items()
    ]
    assert got == INPUT_ORDER


def test_root_entry_point_imports_without_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', r'{REPO / '__init__.py'}',"
        f" submodule_search_locations=[r'{REPO}'])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['pack'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert len(mod.NODE_CLASS_MAPPINGS) == 13, mod.NODE_CLASS_MAPPINGS\n"
        "assert set(mod.NODE_DISPLAY_NAME_MAPPINGS) == set(mod.NODE_CLASS_MAPPINGS)\n"
        "assert not any(m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'server')"
        " for m in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr


def test_only_the_bridge_imports_comfyui():
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|folder_paths|server)\b", re.M)
    offenders = [
        p.name
        for p in (REPO / "nodes").glob("*.py")
        if p.name != "bridge.py" and pattern.search(p.read_text())
    ]
    assert offenders == []


# -- one video, three ways -----------------------------------------------------------------------


def test_granular_graph_generate_and_pipeline_give_identical_frames(host, model, vae, tiny_files,
                                                                     tmp_path):  # fmt: skip
    positive = conditioning()
    streams, chunks = granular(model, positive)
    frames = decode_all(vae, chunks)
    assert frames.shape == (FRAMES, H, W, 3) and frames.dtype == torch.float32

    # exact seams: any decode order gives the same frames
    for seed in (1, 2):
        MEMO.clear()
        order = list(range(CHUNKS))
        random.Random(seed).shuffle(order)
        assert torch.equal(decode_all(vae, chunks, order), frames)

    # the whole-stream node
    out = generate_node(model, positive, vae)
    preview, filename, video = out["result"]
    assert torch.equal(preview, frames)
    assert video is None  # the fake host has no comfy_api VIDEO type
    assert out["ui"]["animated"] == (True,)
    (entry,) = out["ui"]["images"]
    assert entry["type"] == "output" and filename.endswith(entry["filename"])
    assert count_frames(filename) == FRAMES
    chunk_events = [d for e, d in host.events if e == "adastate.chunk"]
    assert [d["chunk"] for d in chunk_events] == list(range(1, CHUNKS + 1))  # as users count
    assert chunk_events[-1] == {**chunk_events[-1], "node": "12", "total": CHUNKS, "frames": FRAMES}
    assert chunk_events[-1]["filename"] == entry["filename"]
    shown = chunk_events[-1]["preview"]  # the frontend shows this file while the run goes on
    assert shown == {"filename": "adastate_preview_12.jpg", "subfolder": "", "type": "temp"}
    assert (host.temp_dir / shown["filename"]).stat().st_size > 0
    # sent only to the tab that queued the prompt (the server's client_id), never broadcast
    assert host.event_clients == ["fake-client"] * CHUNKS
    # no progress-bar previews: the frontend would show them instead of the finished video
    assert all(p is None for _, _, p in host.progress)
    per_chunk = 4 + 3  # denoising steps, then the latent frames decoded
    assert host.progress[-1][:2] == (CHUNKS * per_chunk, CHUNKS * per_chunk)
    values = [v for v, total, _ in host.progress if total == CHUNKS * per_chunk]
    assert values == sorted(values) and {5, 6} <= set(values)  # the decode reports progress

    # a bounded preview: evenly spaced frames, first and last included
    assert preview_indices(FRAMES, 5) == {0, 11, 22, 33, 44}
    assert preview_indices(FRAMES, 1000) == set(range(FRAMES))

    # the library pipeline (what `adastate generate` runs), PNG output
    dit = load_dit(tiny_files["dit"])
    decoder = load_vae(tiny_files["vae_path"])
    config = StreamConfig(height=H, width=W, seed=SEED)
    stream = init_stream(dit, positive[0][0], config)
    png = tmp_path / "cli" / "clip.png"
    with open_writer(png) as writer:
        generate(dit, decoder, stream, writer, total_chunks=CHUNKS)
    assert np.array_equal(read_frames(png), to_uint8_frames(frames))

    # LATENT output is raw VAE space
    _, latent = run("AdaState_DenoiseChunk", model, streams[1])
    mean = torch.tensor(LATENT_MEAN).view(1, -1, 1, 1, 1)
    std = torch.tensor(LATENT_STD).view(1, -1, 1, 1, 1)
    assert torch.allclose(latent["samples"], chunks[1].chunk.content * std + mean)


def test_rerun_with_cached_outputs_is_pure(host, model, vae):
    positive = conditioning()
    streams, chunks = granular(model, positive, chunks=3)
    frames = decode_all(vae, chunks)
    before = checksum(positive, streams, chunks)
    # ComfyUI re-runs a changed downstream part with the same cached upstream objects
    for _ in range(2):
        again, _ = run("AdaState_DenoiseChunk", model, streams[2])
        assert torch.equal(again.chunk.content, chunks[2].chunk.content)
        updated = run("AdaState_UpdateState", model, streams[2], again)[0]
        assert checksum(updated.state.window, updated.history) == checksum(
            streams[3].state.window, streams[3].history
        )
        assert torch.equal(run("AdaState_Decode", vae, chunks[1])[0], frames[9:21])
    assert checksum(positive, streams, chunks) == before
    # and a fresh run gives the same
    MEMO.clear()
    fresh_streams, fresh_chunks = granular(model, positive, chunks=3)
    assert torch.equal(decode_all(vae, fresh_chunks), frames)
    assert checksum(positive, streams, chunks) == before


def test_cancel_leaves_a_playable_partial_file(host, model, vae):
    host.interrupt_after_chunks = 2
    with pytest.raises(InterruptProcessingException):
        generate_node(model, conditioning(), vae)
    (video,) = host.output_dir.glob("*.mp4")
    assert count_frames(video) == StreamConfig(height=H, width=W).frames_after(2)
    assert [d["chunk"] for e, d in host.events if e == "adastate.chunk"] == [1, 2]


def test_cancel_during_a_decode_stops_at_once_and_keeps_finished_chunks(host, model, vae,
                                                                         monkeypatch):  # fmt: skip
    per_chunk = 4 + 3
    real = nodes.bridge.progress

    def progress(total):
        bar = real(total)
        update = bar.update_absolute

        def update_absolute(value, total=None, preview=None):
            update(value, total, preview)
            if value == 2 * per_chunk + 4 + 1:  # chunk 3: its first latent frame decoded
                host.interrupted = True

        bar.update_absolute = update_absolute
        return bar

    monkeypatch.setattr(nodes.bridge, "progress", progress)
    with pytest.raises(InterruptProcessingException):
        generate_node(model, conditioning(), vae)
    (video,) = host.output_dir.glob("*.mp4")
    assert count_frames(video) == StreamConfig(height=H, width=W).frames_after(2)
    # stopped inside the decode of chunk 3 (its second frame never decoded)
    assert max(v for v, _, _ in host.progress) == 2 * per_chunk + 4 + 1


def test_a_run_stopped_before_any_frame_leaves_no_file(host, model, vae):
    host.interrupted = True  # Cancel pressed before the first step finished
    with pytest.raises(InterruptProcessingException):
        generate_node(model, conditioning(), vae)
    assert list(host.output_dir.rglob("*")) == []


def test_runs_never_overwrite_earlier_files(host, model, vae, monkeypatch):
    first = generate_node(model, conditioning(), vae, seed=1)["result"][1]
    second = generate_node(model, conditioning(), vae, seed=2)["result"][1]
    # ComfyUI's numbering: the counter advances past every earlier file
    assert [Path(first).name, Path(second).name] == ["AdaState_00001_.mp4", "AdaState_00002_.mp4"]
    assert not np.array_equal(read_frames(first), read_frames(second))
    images = torch.rand(3, H, W, 3)
    combine = NODES["AdaState_VideoCombine"]().combine
    names = [Path(combine(images, 16.0, "mp4", 19, "AdaState", True)["result"][0]).name
             for _ in range(2)]  # fmt: skip
    assert names == ["AdaState_00003_.mp4", "AdaState_00004_.mp4"]

    # a file (or a link) appearing under the chosen name is never written over or through
    target = host.output_dir / "precious.txt"
    target.write_text("keep me")
    taken = host.output_dir / "race_00001_.mp4"
    taken.symlink_to(target)
    other = host.output_dir / "race_00002_.mp4"
    other.write_bytes(b"someone else's video")
    fp = sys.modules["folder_paths"]
    real = fp.get_save_image_path
    monkeypatch.setattr(  # as if both appeared after ComfyUI counted the folder
        fp, "get_save_image_path", lambda *a, **k: (*real(*a, **k)[:2], 1, *real(*a, **k)[3:])
    )
    path = Path(combine(images, 16.0, "mp4", 19, "race", True)["result"][0])
    assert path.name == "race_00003_.mp4" and count_frames(path) == 3
    assert target.read_text() == "keep me" and other.read_bytes() == b"someone else's video"
    assert taken.is_symlink()


def test_decode_chain_decodes_each_chunk_once(host, model, vae):
    _, chunks = granular(model, conditioning())
    reference = decode_all(vae, chunks)
    MEMO.clear()
    MEMO.decoded_chunks = 0
    decoder, frames = None, []
    for chunk in chunks:  # Decode Chunk k gets the `decoder` output of Decode Chunk k-1
        images, decoder = run("AdaState_Decode", vae, chunk, decoder)
        frames.append(images)
        assert len(MEMO) == 1  # one decoder cache held, whatever the length
    assert torch.equal(torch.cat(frames), reference)
    assert MEMO.decoded_chunks == CHUNKS and decoder.chunks == CHUNKS

    # without the chain (older workflows) the frames are still exact, in any order
    MEMO.clear()
    MEMO.decoded_chunks = 0
    assert torch.equal(decode_all(vae, chunks, order=[3, 2, 1, 0]), reference)
    assert MEMO.decoded_chunks > CHUNKS

    # a dropped cache (another video decoded meanwhile) is rebuilt exactly from the history
    MEMO.clear()
    decoders = [None]
    for chunk in chunks:
        decoders.append(run("AdaState_Decode", vae, chunk, decoders[-1])[1])
    MEMO.clear()
    assert torch.equal(run("AdaState_Decode", vae, chunks[3], decoders[3])[0], reference[33:])

    # wrong wiring is named
    with pytest.raises(AdaStateError, match="has decoded 1 chunk.*this is chunk 3.*chunk 2"):
        run("AdaState_Decode", vae, chunks[2], decoders[1])
    _, others = granular(model, conditioning(3), chunks=2)
    with pytest.raises(AdaStateError, match="another stream"):
        run("AdaState_Decode", vae, others[1], decoders[1])
    with pytest.raises(AdaStateError, match="another VAE"):
        run("AdaState_Decode", FakeVAE(random_vae(dim=8, seed=9)), chunks[1], decoders[1])


def test_prompt_schedule_matches_a_granular_prompt_switch(host, model, vae):
    clip = FakeCLIP()
    prompts = run("AdaState_PromptSchedule", clip, "0: a red fox\n1: a blue bird", False)[0]
    assert [s for s, _ in prompts.entries] == [0.0, 1.0] and prompts.recache is False
    first, second = (c for _, c in prompts.entries)
    assert first[0][0].shape == (1, 16, 32)
    switch_at = StreamConfig(height=H, width=W).chunk_at_seconds(1.0)
    _, chunks = granular(model, first, switch={switch_at: second})
    frames = decode_all(vae, chunks)
    preview = generate_node(model, conditioning(5), vae, prompts=prompts)["result"][0]
    assert torch.equal(preview, frames)
    # without the switch the video differs from chunk `switch_at` on
    _, plain = granular(model, first)
    assert not torch.equal(decode_all(vae, plain), frames)
    # a schedule that starts later: Generate's `positive` plays until its first switch
    later = run("AdaState_PromptSchedule", clip, "1: a blue bird", False)[0]
    assert [s for s, _ in later.entries] == [1.0]
    MEMO.clear()
    preview = generate_node(model, first, vae, prompts=later)["result"][0]
    assert torch.equal(preview, frames)


def test_video_combine_saves_frames_with_the_workflow(host):
    images = torch.rand(9, H, W, 3)
    prompt, workflow = {"1": {"class_type": "X"}}, {"nodes": []}
    cls = NODES["AdaState_VideoCombine"]
    out = cls().combine(images, 16.0, "webp", 19, "clips/AdaState", True, prompt,
                        {"workflow": workflow})  # fmt: skip
    path, video = out["result"]
    assert video is None
    assert out["ui"] == {
        "images": [{"filename": "AdaState_00001_.webp", "subfolder": "clips", "type": "output"}],
        "animated": (True,),
    }
    assert count_frames(path) == 9
    meta = read_metadata(path)
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == workflow
    again = cls().combine(images, 16.0, "gif", 19, "AdaState", False)
    assert again["ui"]["images"][0]["type"] == "temp"
    assert again["ui"]["animated"] == (False,)  # the frontend shows a gif as an image
    assert again["result"][0].startswith(str(host.temp_dir))


# -- analysis ------------------------------------------------------------------------------------


def test_attention_probe_and_decode_state(host, model, vae):
    streams, chunks = granular(model, conditioning(), chunks=3)
    chart = run("AdaState_AttentionProbe", model, streams[3], 1)[0]
    assert chart.ndim == 4 and chart.shape[0] == 1 and chart.shape[-1] == 3
    assert 0 <= chart.min() and chart.max() <= 1
    for k in (1, 2, 3):
        shares = attention_shares(model.dit, streams[k].state, 0)
        assert torch.allclose(shares.per_layer.sum(dim=1), torch.ones(2, dtype=torch.float64))
        assert abs(float(shares.share.sum()) - 1) < 1e-9 and 0 < shares.off_diagonal < 1
    assert attention_shares(model.dit, streams[3].state, 0).labels[0] == "anchor 0"
    with pytest.raises(AdaStateError, match="nothing is cached yet"):
        run("AdaState_AttentionProbe", model, streams[0], 0)
    with pytest.raises(AdaStateError, match="steps 0..3"):
        run("AdaState_AttentionProbe", model, streams[1], 4)

    state_frames = run("AdaState_DecodeState", vae, chunks[2])[0]
    assert state_frames.shape == (1, H, W, 3)  # S = 1 latent frame
    with pytest.raises(AdaStateError, match="no hidden state"):
        run("AdaState_DecodeState", vae, chunks[0])


# -- errors users can hit ------------------------------------------------------------------------


def test_clear_errors(host, model, vae, tiny_files):
    folder = host.models_dir / "diffusion_models"
    save_file(tiny_files["vae_state"], str(folder / "wan_2.1_vae.safetensors"))
    with pytest.raises(AdaStateError, match="VAE") as err:
        run("AdaState_LoadModel", "wan_2.1_vae.safetensors", "default", "sdpa")
    # it recommends the causal checkpoint, as the loader's tooltip does, not the base model
    assert "self_forcing_dmd.pt" in str(err.value) and "not the base" in str(err.value)
    assert "wan2.1_t2v_1.3B_fp16.safetensors or" not in str(err.value)

    wan22 = FakeVAE(random_vae(dim=8, z_dim=48, seed=3))
    _, chunks = granular(model, conditioning(), chunks=1)
    with pytest.raises(AdaStateError, match="connected VAE is the Wan2.2 VAE"):
        run("AdaState_Decode", wan22, chunks[0])

    with pytest.raises(AdaStateError, match="different text encoder"):
        run("AdaState_InitCache", model, conditioning(width=48), **STREAM_ARGS)
    with pytest.raises(AdaStateError, match="CONDITIONING"):
        run("AdaState_InitCache", model, "a fox", **STREAM_ARGS)
    with pytest.raises(AdaStateError, match="width 100 must be a positive multiple of 16"):
        run("AdaState_InitCache", model, conditioning(), **{**STREAM_ARGS, "width": 100})
    with pytest.raises(AdaStateError, match="comma-separated"):
        run("AdaState_InitCache", model, conditioning(), **{**STREAM_ARGS, "steps": "a,b"})
    with pytest.raises(ValueError, match="filename_prefix '../escape' cannot be used"):
        run("AdaState_VideoCombine", torch.rand(2, H, W, 3), 16.0, "gif", 19, "../escape", True)
    with pytest.raises(ValueError, match="cannot be used"):
        generate_node(model, conditioning(), vae, filename_prefix="../../x")

    # a chunk applied to another stream than the one it came from
    streams, chunks = granular(model, conditioning(), chunks=1)
    with pytest.raises(AdaStateError, match="another stream state"):
        run("AdaState_UpdateState", model, streams[1], chunks[0])
