"""Prime Stream on the fake host: Init Cache -> Prime Stream -> Generate Stream continues the
given frames exactly as the library (and so the CLI) does; the granular chain decodes without a
seam; bad frames are refused with a message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("av")

from fake_comfy import FakeVAE, install  # noqa: E402

from adastate_core.io import count_frames, read_frames  # noqa: E402
from adastate_core.io.background import frames_uint8  # noqa: E402
from adastate_core.model import load_dit  # noqa: E402
from adastate_core.model.random_weights import TINY, save_random_checkpoint  # noqa: E402
from adastate_core.pipeline import generate, to_frames  # noqa: E402
from adastate_core.prefix import check_frames, encode_frames, start_from  # noqa: E402
from adastate_core.stream import StreamConfig, init_stream  # noqa: E402
from adastate_core.vae import load_vae, load_vae_encoder  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict as random_vae  # noqa: E402
from nodes import NODE_CLASS_MAPPINGS as NODES  # noqa: E402
from nodes.common import NodeInputError  # noqa: E402
from nodes.decode_nodes import MEMO  # noqa: E402

W, H = 96, 64
ARGS = dict(
    width=W, height=H, anchor_policy="adaptive", chunk_frames=3, state_frames=1,
    window_frames=3, anchor_frames=1, steps="1000,750,500,250", shift=5.0, seed=4,
)  # fmt: skip
VAE_STATE = random_vae(dim=8, seed=2, encoder=True)


@pytest.fixture
def host(monkeypatch, tmp_path):
    host = install(monkeypatch, tmp_path / "comfy")
    folder = host.models_dir / "diffusion_models"
    folder.mkdir()
    save_random_checkpoint(folder / "tiny.safetensors", TINY, seed=1, layout="official")
    MEMO.clear()
    return host


def positive():
    rows = torch.randn(1, 16, TINY.text_dim, generator=torch.Generator().manual_seed(0))
    rows[:, 10:] = 0
    return [[rows, {"pooled_output": None}]]


def run(node_id, *args, **kwargs):
    cls = NODES[node_id]
    out = getattr(cls(), cls.FUNCTION)(*args, **kwargs)
    return out["result"] if isinstance(out, dict) else out


def images(n: int) -> torch.Tensor:
    return torch.rand(n, H, W, 3, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("n, output", [(13, "original"), (9, "decoded")])
def test_prime_then_generate_equals_the_library(host, n, output):
    model = run("AdaState_LoadModel", "tiny.safetensors", "default", "sdpa")[0]
    vae = FakeVAE(VAE_STATE)
    pos = positive()
    stream = run("AdaState_InitCache", model, pos, **ARGS)[0]
    primed = run("AdaState_PrimeStream", model, stream, vae, images(n), output)[0]
    total = 4
    frames = StreamConfig(height=H, width=W).frames_after(total)
    preview, path, _ = run(
        "AdaState_Generate", model, pos, vae, **ARGS, seconds=frames / 16, format="mp4",
        crf=19, filename_prefix="primed", preview_frames=1000, stream=primed, unique_id="5",
    )  # fmt: skip
    assert count_frames(path) == frames

    # the library path (what the CLI runs)
    dit = load_dit(host.models_dir / "diffusion_models" / "tiny.safetensors")
    dec, enc = load_vae(VAE_STATE), load_vae_encoder(VAE_STATE)
    given = check_frames(images(n), H, W)
    rows = pos[0][0][:, :10]
    state = init_stream(dit, rows, StreamConfig(height=H, width=W, seed=4))

    class Rec:
        parts: list = []

        def write(self, f):
            self.parts.append(torch.as_tensor(np.asarray(f)))

    rec = Rec()
    rec.parts = []
    started = start_from(dit, dec, state, encode_frames(enc, given), given, rec.write, output)
    generated = []
    generate(dit, dec, started.stream, rec, total_chunks=total, vae_cache=started.vae_cache,
             frames_written=started.frames_written, skip_frames=started.skip_frames,
             on_chunk=lambda r: generated.append(r.frames))  # fmt: skip
    assert torch.equal(preview, torch.cat(generated))  # the same frames, float
    written = torch.cat(rec.parts)
    assert written.shape[0] == frames
    if output == "original":
        file_frames = read_frames(path)
        assert np.array_equal(file_frames.shape, written.numpy().shape)


def test_granular_chain_has_no_seam(host):
    """Prime -> Denoise Chunk -> Decode Chunk: the chunk decodes as the continuation of the
    primed frames (the decoder cache is rebuilt from the stream's history)."""
    model = run("AdaState_LoadModel", "tiny.safetensors", "default", "sdpa")[0]
    vae = FakeVAE(VAE_STATE)
    stream = run("AdaState_InitCache", model, positive(), **ARGS)[0]
    primed = run("AdaState_PrimeStream", model, stream, vae, images(9), "original")[0]
    assert len(primed.history) == 1 and primed.state.chunk_index == 1
    chunk, _ = run("AdaState_DenoiseChunk", model, primed)
    (frames,) = run("AdaState_Decode", vae, chunk)[:1]
    dec = load_vae(VAE_STATE)
    both = torch.cat([primed.history[0], chunk.chunk.content.cpu()], dim=2)
    expected = to_frames(dec.decode(both))[-frames.shape[0] :]
    assert torch.equal(frames_uint8(frames.permute(3, 0, 1, 2)[None]),
                       frames_uint8(expected.permute(3, 0, 1, 2)[None]))  # fmt: skip


def test_bad_frames_and_streams(host):
    model = run("AdaState_LoadModel", "tiny.safetensors", "default", "sdpa")[0]
    vae = FakeVAE(VAE_STATE)
    stream = run("AdaState_InitCache", model, positive(), **ARGS)[0]
    with pytest.raises(NodeInputError, match="resize them first"):
        run("AdaState_PrimeStream", model, stream, vae, torch.rand(5, 32, 32, 3), "original")
    primed = run("AdaState_PrimeStream", model, stream, vae, images(9), "original")[0]
    with pytest.raises(NodeInputError, match="new stream from Init Cache"):
        run("AdaState_PrimeStream", model, primed, vae, images(1), "original")
    with pytest.raises(NodeInputError, match="already holds"):
        run("AdaState_Generate", model, positive(), vae, **ARGS, seconds=0.5, format="mp4",
            crf=19, filename_prefix="x", preview_frames=0, stream=primed, unique_id="1")  # fmt: skip
