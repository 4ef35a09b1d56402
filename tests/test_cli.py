"""The `adastate` command end to end, in subprocesses, on tiny random-weight models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("av")

from tiny_models import write_tiny_models  # noqa: E402

from adastate_core.io import count_frames, read_frames, read_metadata  # noqa: E402
from adastate_core.stream import StreamConfig  # noqa: E402

from conftest import REPO  # noqa: E402

SIZE = ["--height", "64", "--width", "96"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


@pytest.fixture
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "embeddings"


def cli(*args, cwd=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "adastate_core", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env=env,
    )
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def gen(models, cache_dir, *args, **kw):
    return cli("generate", "--models-dir", models, "--cache-dir", cache_dir, *SIZE, *args, **kw)


def frames_after(chunks: int) -> int:
    return StreamConfig(height=64, width=96).frames_after(chunks)


def test_demo_exactly_as_the_readme_runs_it(tmp_path):
    res = cli("demo", cwd=tmp_path)
    assert "SMOKE RUN" in res.stderr and "frames/s" in res.stdout
    assert count_frames(tmp_path / "adastate_demo.mp4") == 81  # 5 s at 16 fps: 7 chunks


def test_generate_png_is_deterministic_and_matches_the_library(models, cache_dir, tmp_path):
    a, b = tmp_path / "a" / "clip.png", tmp_path / "b" / "clip.png"
    for out in (a, b):
        gen(
            models,
            cache_dir,
            "--prompt",
            "a red fox in the snow",
            "--chunks",
            "3",
            "--seed",
            "7",
            "--out",
            out,
        )
    fa, fb = read_frames(a), read_frames(b)
    assert fa.shape == (frames_after(3), 64, 96, 3) and np.array_equal(fa, fb)

    # the same video from the Python API
    from adastate_core.io import to_uint8_frames
    from adastate_core.model import load_dit
    from adastate_core.pipeline import to_frames
    from adastate_core.stream import init_stream, stream_chunks
    from adastate_core.text import encode_prompts
    from adastate_core.vae import load_vae

    rows = encode_prompts(
        ["a red fox in the snow"],
        models / "text_encoders" / "umt5_xxl_fp16.safetensors",
        cache_dir=cache_dir,
    )
    dit = load_dit(models / "diffusion_models" / "self_forcing_dmd.pt")
    vae = load_vae(models / "vae" / "wan_2.1_vae.safetensors")
    stream = init_stream(dit, rows[0], StreamConfig(height=64, width=96, seed=7))
    frames, cache = [], None
    for step in stream_chunks(dit, stream, chunks=3):
        video, cache = vae.decode_chunk(step.chunk.content, cache)
        frames.append(to_uint8_frames(to_frames(video)))
    assert np.array_equal(np.concatenate(frames), fa)


def test_generate_mp4_with_schedule_and_metadata(models, cache_dir, tmp_path):
    out = tmp_path / "fox.mp4"
    res = gen(
        models,
        cache_dir,
        "--prompt",
        "0:a red fox | 1:a blue bird",
        "--chunks",
        "4",
        "--seed",
        "3",
        "--anchor",
        "static",
        "--out",
        out,
    )
    assert f"{frames_after(4)} frames (4 chunks)" in res.stdout
    assert count_frames(out) == frames_after(4)
    meta = read_metadata(out)
    assert meta["prompt"] == "0:a red fox | 1:a blue bird" and meta["seed"] == "3"
    assert '"policy": "static"' in meta["settings"]
    assert not list(tmp_path.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "fox.mp4"
    ]  # no marker, no lock left beside the finished video


def _run_until(args, chunk: int, sig: int) -> subprocess.Popen:
    """Start `adastate generate`, send `sig` once its progress says `chunk` chunks are done."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adastate_core", "generate", *map(str, args)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    for line in proc.stderr:
        if line.startswith(f"chunk {chunk}/"):
            proc.send_signal(sig)
            break
    proc.communicate(timeout=300)
    return proc


def test_killed_run_leaves_playable_file_and_resume_finishes_identically(
    models, cache_dir, tmp_path
):
    base = [
        "--models-dir",
        models,
        "--cache-dir",
        cache_dir,
        *SIZE,
        "--prompt",
        "a dog",
        "--chunks",
        "6",
        "--seed",
        "5",
    ]
    full = tmp_path / "full" / "v.png"
    cli("generate", *base, "--out", full)
    cut = tmp_path / "cut" / "v.png"
    state = tmp_path / "cut" / "run.safetensors"
    proc = _run_until([*base, "--out", cut, "--save-state", state], 2, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    # every complete chunk written before the kill, nothing broken (the progress line counts
    # chunks handed to the writer thread, which may still be encoding the last one or two)
    n = count_frames(cut)
    assert n in {frames_after(k) for k in (1, 2, 3, 4, 5)}
    assert np.array_equal(read_frames(cut), read_frames(full)[:n])
    cli(
        "generate",
        "--models-dir",
        models,
        "--cache-dir",
        cache_dir,
        "--chunks",
        "6",
        "--resume",
        state,
        "--out",
        cut,
    )
    assert np.array_equal(read_frames(cut), read_frames(full))


def test_ctrl_c_finishes_the_file_cleanly(models, cache_dir, tmp_path):
    out = tmp_path / "v.mp4"
    state = tmp_path / "run.safetensors"
    proc = _run_until(
        [
            "--models-dir",
            models,
            "--cache-dir",
            cache_dir,
            *SIZE,
            "--prompt",
            "a cat",
            "--chunks",
            "40",
            "--out",
            out,
            "--save-state",
            state,
        ],
        1,
        signal.SIGINT,
    )
    assert proc.returncode == 130
    n = count_frames(out)
    assert n in {frames_after(k) for k in range(1, 40)} and n < frames_after(40)
    cli(
        "generate",
        "--models-dir",
        models,
        "--cache-dir",
        cache_dir,
        "--chunks",
        "8",
        "--resume",
        state,
        "--out",
        out,
    )
    assert count_frames(out) == frames_after(8)


def test_batch_skips_finished_outputs(models, cache_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n\n0:a dog | 1:a cat\n")
    out = tmp_path / "videos"
    args = ["--prompts", prompts, "--chunks", "2", "--out", out]
    gen(models, cache_dir, *args)
    files = sorted(out.glob("*.mp4"))
    assert [f.name for f in files] == ["0001_a_red_fox.mp4", "0002_a_dog.mp4"]
    stamp = {f: f.stat().st_mtime_ns for f in files}
    res = gen(models, cache_dir, *args)
    assert res.stderr.count("finished (same prompt, seed and settings)") == 2
    assert all(f.stat().st_mtime_ns == stamp[f] for f in files)
    files[1].unlink()
    res = gen(models, cache_dir, *args)  # a deleted video is made again, the other kept
    assert res.stderr.count("finished (same") == 1
    assert files[0].stat().st_mtime_ns == stamp[files[0]]
    assert all(count_frames(f) == frames_after(2) for f in files)
    assert not list(out.glob("*.incomplete")) and not list(out.glob(".*lock"))


@pytest.mark.parametrize(
    "case",
    [
        "vae_as_dit",
        "dit_missing",
        "no_models",
        "empty_prompts",
        "unwritable",
        "bad_size",
        "no_prompt",
        "bad_format",
    ],
)
def test_bad_input_messages(models, cache_dir, tmp_path, case):
    vae = models / "vae" / "wan_2.1_vae.safetensors"
    args = {
        "vae_as_dit": (
            ["--models-dir", models, "--dit", vae, "--prompt", "x", "--chunks", "1"],
            "a VAE, not a diffusion model",
        ),
        "dit_missing": (
            [
                "--models-dir",
                models,
                "--dit",
                tmp_path / "nope.pt",
                "--prompt",
                "x",
                "--chunks",
                "1",
            ],
            "dit file not found",
        ),
        "no_models": (
            ["--models-dir", tmp_path, "--prompt", "x", "--chunks", "1"],
            "no causal Wan2.1 DiT found. Put a causal few-step Wan2.1 DiT",
        ),
        "empty_prompts": (
            ["--models-dir", models, "--prompts", tmp_path / "e.txt", "--chunks", "1"],
            "has no prompts",
        ),
        "unwritable": (
            [
                "--models-dir",
                models,
                "--prompt",
                "x",
                "--chunks",
                "1",
                "--out",
                vae / "sub" / "v.mp4",
            ],
            "cannot write the output",
        ),
        "bad_size": (
            ["--models-dir", models, "--prompt", "x", "--chunks", "1", "--height", "100"],
            "height 100 must be a positive multiple of 16",
        ),
        "no_prompt": (["--models-dir", models, "--chunks", "1"], "give a prompt"),
        "bad_format": (
            ["--models-dir", models, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "v.mov"],
            "unknown suffix '.mov'",
        ),
    }[case]
    (tmp_path / "e.txt").write_text("\n# nothing\n")
    res = cli("generate", "--cache-dir", cache_dir, *args[0], check=False, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert args[1] in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.txt"]  # refused, nothing started


def test_wan22_vae_is_refused(models, cache_dir, tmp_path):
    from safetensors.torch import save_file

    from adastate_core.vae.random_weights import random_state_dict

    v22 = tmp_path / "wan2.2_vae.safetensors"
    save_file(random_state_dict(dim=8, z_dim=48), str(v22))
    res = cli(
        "generate",
        "--models-dir",
        models,
        "--cache-dir",
        cache_dir,
        "--vae",
        v22,
        "--prompt",
        "x",
        "--chunks",
        "1",
        check=False,
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "Wan2.2" in res.stderr and "Traceback" not in res.stderr
