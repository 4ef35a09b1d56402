"""`adastate generate --init-image / --init-video` and `adastate extend`, end to end on tiny
models: the file starts with the given frames and continues them; the library gives the same
frames; the input is never touched; bad input is refused before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")

from test_cli import SIZE, cli  # noqa: E402
from tiny_models import write_tiny_models  # noqa: E402

from adastate_core.io import read_frames, read_metadata  # noqa: E402
from adastate_core.stream import StreamConfig  # noqa: E402

H, W = 64, 96


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


def gen(models, cache_dir, *args, **kw):
    return cli("generate", "--models-dir", models, "--cache-dir", cache_dir, *SIZE, *args, **kw)


def main_in_process(*args) -> int:
    from adastate_core.cli import main

    return main([str(a) for a in args])


def picture(path, size=(150, 80), mode="RGB"):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(data).convert(mode).save(path)
    return path


def test_init_image_starts_the_video_and_matches_the_library(models, tmp_path):
    cache = tmp_path / "emb"
    image = picture(tmp_path / "start.png", mode="RGBA")
    out = tmp_path / "out" / "clip.png"
    gen(models, cache, "--prompt", "a red fox", "--chunks", "3", "--seed", "5",
        "--init-image", image, "--out", out)  # fmt: skip
    frames = read_frames(out)
    assert frames.shape == (StreamConfig(height=H, width=W).frames_after(3), H, W, 3)
    from adastate_core.prefix import read_prefix

    fitted = read_prefix(image, H, W)
    assert np.array_equal(frames[0], fitted[0])  # the original frame, resized by the rule

    # the same from the Python API
    from adastate_core.model import load_dit
    from adastate_core.pipeline import generate
    from adastate_core.prefix import encode_frames, start_from
    from adastate_core.stream import init_stream
    from adastate_core.text import encode_prompts
    from adastate_core.vae import load_vae, load_vae_encoder

    rows = encode_prompts(
        ["a red fox"], models / "text_encoders" / "umt5_xxl_fp16.safetensors", cache_dir=cache
    )
    vae_file = models / "vae" / "wan_2.1_vae.safetensors"
    dit, vae, enc = (
        load_dit(models / "diffusion_models" / "self_forcing_dmd.pt"),
        load_vae(vae_file),
        load_vae_encoder(vae_file),
    )

    class Rec:
        def __init__(self):
            self.parts = []

        def write(self, f):
            self.parts.append(np.asarray(f))

    rec = Rec()
    stream = init_stream(dit, rows[0], StreamConfig(height=H, width=W, seed=5))
    started = start_from(dit, vae, stream, encode_frames(enc, fitted), fitted, rec.write)
    generate(dit, vae, started.stream, rec, total_chunks=3, vae_cache=started.vae_cache,
             frames_written=started.frames_written, skip_frames=started.skip_frames)  # fmt: skip
    assert np.array_equal(np.concatenate(rec.parts), frames)


def test_extend_continues_a_clip_into_a_new_file(models, tmp_path):
    cache = tmp_path / "emb"
    clip = tmp_path / "clip.mp4"
    main_in_process("generate", "--models-dir", models, "--cache-dir", cache, *SIZE,
                    "--prompt", "0:a red fox | 1:a blue bird", "--chunks", "2", "--seed", "9",
                    "--out", clip)  # fmt: skip
    before = clip.read_bytes()
    first = read_frames(clip)
    n = first.shape[0]
    out = tmp_path / "ext" / "extended.png"  # lossless: the clip's frames come through exactly
    res = cli("extend", clip, "--seconds", "1", "--out", out, "--models-dir", models,
              "--cache-dir", cache)  # fmt: skip
    assert clip.read_bytes() == before, res.stderr
    meta = read_metadata(out)
    assert meta["prompt"] == read_metadata(clip)["prompt"] and meta["seed"] == "9"
    assert "clip.mp4" in meta["init"]
    frames = read_frames(out)
    cfg = StreamConfig(height=H, width=W)
    assert frames.shape[0] == cfg.frames_after(cfg.chunks_for_seconds(n / 16 + 1))
    assert np.array_equal(frames[:n], first)
    # default name: beside the clip, numbered, never the clip itself
    assert main_in_process("extend", clip, "--chunks", "1", "--models-dir", models,
                           "--cache-dir", cache) == 0  # fmt: skip
    assert (tmp_path / "clip_extended_001.mp4").is_file()
    assert read_frames(tmp_path / "clip_extended_001.mp4").shape[0] == cfg.frames_after(3)
    assert clip.read_bytes() == before


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", "init file not found"),
        ("corrupt", "not a readable video"),
        ("too short", "would end inside the init"),
        ("frames without video", "give --init-video"),
        ("with resume", "cannot be used with"),
        ("extend foreign", "give --prompt"),
    ],
)
def test_bad_init_input(models, tmp_path, capsys, case, words):
    """Refused before any model loads (run in-process: no interpreter start per case)."""
    cache = tmp_path / "emb"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 64)
    img = picture(tmp_path / "a.png")
    foreign = tmp_path / "foreign.mp4"
    if case == "extend foreign":
        from adastate_core.io import open_writer

        with open_writer(foreign, fps=16) as w:
            w.write(np.zeros((5, H, W, 3), np.uint8))
        rc = main_in_process("extend", foreign, "--seconds", "1", "--models-dir", models)
    else:
        args = {
            "missing": ["--init-image", tmp_path / "nope.png", "--chunks", "2"],
            "corrupt": ["--init-video", bad, "--chunks", "2"],
            "too short": ["--init-image", img, "--chunks", "1", "--chunk", "1"],
            "frames without video": ["--init-image", img, "--init-frames", "5", "--chunks", "2"],
            "with resume": ["--init-image", img, "--resume", tmp_path / "s.safetensors"],
        }[case]
        rc = main_in_process("generate", "--models-dir", models, "--cache-dir", cache, *SIZE,
                             "--prompt", "x", "--out", tmp_path / "o.mp4", *args)  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2, err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()
