"""Starting from the user's frames: fitting rule, encoding in bounded groups, priming plus
decoder continuity (no seam: the written video equals a one-shot decode of prefix + generated
latents), original-frames output, and the errors users can hit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from adastate_core.io.background import frames_uint8
from adastate_core.pipeline import generate
from adastate_core.prefix import (
    PrefixError,
    check_frames,
    encode_frames,
    fit_frame,
    read_prefix,
    start_from,
    usable_frames,
)
from adastate_core.stream import StreamConfig, init_stream, stream_chunks
from adastate_core.vae import load_vae, load_vae_encoder
from adastate_core.vae.random_weights import random_state_dict

from conftest import tiny_model

H, W = 32, 48


@pytest.fixture(scope="module")
def parts():
    weights = random_state_dict(dim=8, seed=7, encoder=True)
    return tiny_model(2), load_vae_encoder(weights), load_vae(weights)


class Recorder:
    def __init__(self):
        self.frames = []

    def write(self, frames):
        self.frames.append(torch.as_tensor(np.asarray(frames)).clone())

    def all(self):
        return torch.cat(self.frames)


def clip(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, H, W, 3, generator=g) * 255).round().to(torch.uint8)


def cond(model):
    return torch.randn(1, 6, model.config.text_dim, generator=torch.Generator().manual_seed(1))


def test_usable_frames_rule():
    assert [usable_frames(n) for n in (0, 1, 4, 5, 8, 9, 13)] == [0, 1, 1, 5, 5, 9, 13]
    assert usable_frames(20, max_frames=7) == 5


def test_fit_rule_covers_then_centre_crops():
    wide = Image.new("RGB", (200, 50))
    wide.paste((255, 0, 0), (0, 0, 100, 50))  # left half red
    out = fit_frame(wide, H, W)  # 200x50 -> scale to cover 48x32: 128x32, crop x 40..88
    assert out.shape == (H, W, 3)
    assert out[:, :20, 0].mean() > 200 and out[:, -20:, 0].mean() < 50
    gray = fit_frame(Image.new("L", (48, 32), 128), H, W)
    assert (gray == 128).all()
    rgba = fit_frame(Image.new("RGBA", (96, 64), (10, 20, 30, 0)), H, W)
    assert (rgba == np.array([10, 20, 30])).all()  # alpha dropped, colour kept


def test_encode_in_groups_equals_one_shot(parts):
    _, enc, _ = parts
    frames = clip(21)
    video = frames.permute(3, 0, 1, 2)[None].float().div(127.5).sub(1.0)
    assert torch.equal(encode_frames(enc, frames), enc.encode(video))


@pytest.mark.parametrize(
    "n_frames, output", [(9, "decoded"), (13, "decoded"), (13, "original"), (1, "original")]
)
def test_prefix_then_generation_has_no_seam(parts, n_frames, output):
    """The file = the prefix (decoded or original) + the generated frames, and the decoded
    part equals a one-shot decode of all latents (prefix and generated) — no seam."""
    model, enc, dec = parts
    scfg = StreamConfig(height=H, width=W, seed=3)
    frames = clip(n_frames, seed=n_frames)
    latents = encode_frames(enc, frames)
    rec = Recorder()
    started = start_from(model, dec, init_stream(model, cond(model), scfg), latents, frames,
                         rec.write, output=output)  # fmt: skip
    total = 4
    result = generate(
        model, dec, started.stream, rec, total_chunks=total, vae_cache=started.vae_cache,
        frames_written=started.frames_written, skip_frames=started.skip_frames,
    )  # fmt: skip
    written = rec.all()
    assert written.shape[0] == result.frames_written == scfg.frames_after(total)
    # the reference: the same chunks again, every latent decoded at once
    steps = list(stream_chunks(model, started.stream, chunks=total))
    c = scfg.chunk
    whole = (latents.shape[2] // c) * c
    everything = torch.cat([latents[:, :, :whole]] + [s.chunk.content for s in steps], dim=2)
    one_shot = frames_uint8(dec.decode(everything))
    if output == "decoded":
        assert torch.equal(written, one_shot)
    else:
        assert torch.equal(written[: frames.shape[0]], frames)
        assert torch.equal(written[frames.shape[0] :], one_shot[frames.shape[0] :])
    # the lead latents came through exactly
    lead = latents[:, :, whole:]
    if lead.shape[2]:
        assert torch.equal(steps[0].chunk.content[:, :, : lead.shape[2]], lead)


def test_read_prefix_image_and_video(tmp_path):
    from adastate_core.io import open_writer

    img = tmp_path / "a.png"
    Image.new("RGBA", (100, 60), (200, 100, 50, 128)).save(img)
    out = read_prefix(img, H, W)
    assert out.shape == (1, H, W, 3) and out.dtype == np.uint8
    video = tmp_path / "clip.mp4"
    with open_writer(video, fps=16) as w:
        w.write(clip(11).numpy())
    assert read_prefix(video, H, W).shape == (9, H, W, 3)  # the last 1 + 4k frames
    assert read_prefix(video, H, W, max_frames=6).shape == (5, H, W, 3)


def test_bad_prefixes(tmp_path):
    with pytest.raises(PrefixError, match="not found"):
        read_prefix(tmp_path / "missing.png", H, W)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(PrefixError, match="not a readable image"):
        read_prefix(bad, H, W)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(PrefixError, match="not a readable video"):
        read_prefix(junk, H, W)
    with pytest.raises(PrefixError, match="at least 1"):
        read_prefix(bad, H, W, max_frames=0)
    with pytest.raises(PrefixError, match="resize them first"):
        check_frames(torch.zeros(5, 16, 16, 3), H, W)
    with pytest.raises(PrefixError, match="channels"):
        check_frames(torch.zeros(0, H, W, 3), H, W)
    assert check_frames(torch.ones(6, H, W, 4), H, W).shape == (5, H, W, 3)
    assert check_frames(torch.full((1, H, W, 1), 0.5), H, W).shape == (1, H, W, 3)
