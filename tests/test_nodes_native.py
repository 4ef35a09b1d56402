"""AdaState from MODEL on the fake host: a ComfyUI-shaped Wan tree inside a MODEL patcher
drives the same nodes as Load AdaState Model, with the same numbers; ComfyUI's attention
function and transformer options are used when asked; other models are refused with a
message; Cancel raised inside a layer keeps every finished chunk."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("av")

from fake_comfy import FakeVAE, InterruptProcessingException, install, native_model  # noqa: E402

from adastate_core.io import count_frames  # noqa: E402
from adastate_core.model.random_weights import (  # noqa: E402
    TINY,
    random_state_dict,
    save_random_checkpoint,  # noqa: E402
)
from adastate_core.stream import StreamConfig  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict as random_vae  # noqa: E402
from nodes import NODE_CLASS_MAPPINGS as NODES  # noqa: E402
from nodes.common import NodeInputError  # noqa: E402
from nodes.decode_nodes import MEMO  # noqa: E402

from comfy_like import comfy_like  # noqa: E402
from conftest import max_err  # noqa: E402

W, H, SEED = 96, 64, 7
STREAM_ARGS = dict(
    width=W, height=H, anchor_policy="adaptive", chunk_frames=3, state_frames=1,
    window_frames=3, anchor_frames=1, steps="1000,750,500,250", shift=5.0, seed=SEED,
)  # fmt: skip
WEIGHTS = random_state_dict(TINY, 1)


@pytest.fixture
def host(monkeypatch, tmp_path):
    host = install(monkeypatch, tmp_path / "comfy")
    folder = host.models_dir / "diffusion_models"
    folder.mkdir()
    save_random_checkpoint(folder / "tiny.safetensors", TINY, seed=1, layout="official")
    MEMO.clear()
    return host


def conditioning(seed: int = 0) -> list:
    rows = torch.randn(1, 16, TINY.text_dim, generator=torch.Generator().manual_seed(seed))
    rows[:, 10:] = 0
    return [[rows, {"pooled_output": None}]]


def run(node_id: str, *args, **kwargs):
    cls = NODES[node_id]
    out = getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    return out["result"] if isinstance(out, dict) else out


def latents(model, chunks: int = 3) -> torch.Tensor:
    stream = run("AdaState_InitCache", model, conditioning(), **STREAM_ARGS)[0]
    out = []
    for _ in range(chunks):
        chunk, _ = run("AdaState_DenoiseChunk", model, stream)
        stream = run("AdaState_UpdateState", model, stream, chunk)[0]
        out.append(chunk.chunk.content)
    return torch.cat(out, dim=2)


def native(attention: str = "sdpa", options=None, tree=None):
    patcher = native_model(comfy_like(TINY, WEIGHTS) if tree is None else tree, options=options)
    return run("AdaState_NativeModel", patcher, attention)[0], patcher


def test_native_model_streams_like_our_loader(host):
    own = run("AdaState_LoadModel", "tiny.safetensors", "default", "sdpa")[0]
    model, patcher = native()
    assert model.patcher is patcher and model.dit.config == own.dit.config
    a, b = latents(own), latents(model)
    assert max_err(a, b) < 1e-5
    assert [m for m, _ in host.loads].count(patcher) >= 3  # ComfyUI loads the user's MODEL


def test_comfy_attention_uses_the_models_transformer_options(host):
    model, _ = native("comfy", options={"optimized_attention_override": "marker"})
    ref, _ = native("sdpa")
    a, b = latents(model, 1), latents(ref, 1)
    assert host.attention_calls and all(
        o.get("optimized_attention_override") == "marker" for o in host.attention_calls
    )
    assert max_err(a, b) < 1e-6


def test_cancel_inside_a_layer_keeps_finished_chunks(host):
    """ComfyUI checks Cancel in every op: here a layer checks it, and Cancel is pressed
    after two chunks are on disk."""
    import comfy.model_management as mm

    tree = comfy_like(TINY, WEIGHTS)
    tree.blocks[1].ffn[0].register_forward_pre_hook(
        lambda *_: mm.throw_exception_if_processing_interrupted()
    )
    model, _ = native(tree=tree)
    host.interrupt_after_chunks = 2
    vae = FakeVAE(random_vae(dim=8, seed=2))
    frames = StreamConfig(height=H, width=W).frames_after(4)
    with pytest.raises(InterruptProcessingException):
        NODES["AdaState_Generate"]().generate(
            model, conditioning(), vae, seconds=frames / 16, **STREAM_ARGS, format="mp4",
            crf=19, filename_prefix="AdaState", preview_frames=0, unique_id="3",
        )  # fmt: skip
    (video,) = host.output_dir.glob("*.mp4")
    assert count_frames(video) == StreamConfig(height=H, width=W).frames_after(2)


def _named(name: str, base: type = nn.Module):
    return type(name, (base,), {})


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: _vace(), "VACE"),
        (lambda: _with(model_type="i2v"), "i2v"),
        (lambda: _flux(), "Flux"),
        (lambda: _with(patch=48), "Wan2.2 TI2V-5B"),
    ],
)
def test_other_models_are_refused(host, make, words):
    with pytest.raises(NodeInputError, match=words):
        run("AdaState_NativeModel", native_model(make()), "comfy")


def test_not_a_model_is_refused(host):
    with pytest.raises(NodeInputError, match="expected a MODEL"):
        run("AdaState_NativeModel", object(), "comfy")


def test_wan22_latent_format_is_refused(host):
    patcher = native_model(comfy_like(TINY, WEIGHTS), latent_format=_named("Wan22")())
    with pytest.raises(NodeInputError, match="Wan22 latent format"):
        run("AdaState_NativeModel", patcher, "comfy")


def _vace():
    tree = comfy_like(TINY, WEIGHTS)
    tree.__class__ = _named("VaceWanModel", type(tree))
    return tree


def _with(model_type: str = "t2v", patch: int | None = None):
    tree = comfy_like(TINY, WEIGHTS)
    tree.model_type = model_type
    if patch:
        tree.patch_embedding = nn.Conv3d(patch, TINY.dim, (1, 2, 2), stride=(1, 2, 2))
        tree.head.head = nn.Linear(TINY.dim, patch * 4)
    return tree


def _flux():
    flux = _named("Flux")()
    flux.double_blocks = nn.ModuleList([nn.Linear(4, 4)])
    return flux
