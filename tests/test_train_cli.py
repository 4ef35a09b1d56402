"""`adastate train` the way a user meets it, on tiny random-weight models (CPU): the README's
commands, the files a run leaves, resume, Ctrl-C, and every refusal before anything loads."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from adastate_core.model import load_dit
from adastate_core.model.random_weights import TINY, random_state_dict, save_random_checkpoint
from adastate_core.train import files

from conftest import REPO

SIZE = ["--height", "32", "--width", "32"]
FAST = ["--iterations", "4", "--batch", "2", "--gen-every", "2", "--ema-start", "2",
        "--save-every", "2", "--chunks", "3"]  # fmt: skip
PROMPTS = "a red fox runs through snow\na sailing boat at dusk\n# a comment\n\na city street\n"


def cli(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`adastate ARGS` in this process (a Python start-up per call would dominate)."""
    from adastate_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def ok(res):
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def refused(res, *texts):
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr
    for text in texts:
        assert text in res.stderr, res.stderr
    return res.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_models")
    save_random_checkpoint(root / "gen.pt", TINY, seed=0, layout="self-forcing")
    save_random_checkpoint(root / "base.safetensors", TINY, seed=1)
    save_random_checkpoint(root / "teacher.safetensors", TINY, seed=2, layout="official")
    (root / "prompts.txt").write_text(PROMPTS)
    return root


def train(models, out, *extra, cwd):
    return cli(
        "train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
        "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
        "--pseudo-text", *SIZE, *FAST, "--out", out, *extra, cwd=cwd,
    )  # fmt: skip


def test_a_run_leaves_a_usable_model_and_its_record(models, tmp_path):
    res = ok(train(models, tmp_path / "run", "--save-dtype", "fp32", cwd=tmp_path))
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            files.INFERENCE_PT,
            files.INFERENCE_ST,
            files.TRAIN_STATE,
            files.RUN_JSON,
            files.LOG,
            files.CURVE,
        ]  # fmt: skip
    )
    assert "4 iterations = 4 critic updates and 2 generator updates" in res.stderr
    assert "departs from the paper" in res.stderr  # a teacher no larger than the generator
    log = [json.loads(line) for line in (out / files.LOG).read_text().splitlines()]
    assert [e["iteration"] for e in log] == [0, 1, 2, 3]
    assert [e.get("generator_loss") is not None for e in log] == [True, False, True, False]
    run = json.loads((out / files.RUN_JSON).read_text())
    assert run["step"] == 4 and run["generator_updates"] == 2
    # the inference files hold the EMA generator, and load like any checkpoint
    state = files.load_train_state(out / files.TRAIN_STATE)
    hints = {"num_heads": TINY.num_heads, "text_len": TINY.text_len, "eps": TINY.eps}
    want_model = load_dit(state["ema"], dtype=torch.float32, **hints)
    x, cond = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 5, 32)
    want = want_model(x, 700.0, cond)
    for name in (files.INFERENCE_PT, files.INFERENCE_ST):
        model = load_dit(out / name, dtype=torch.float32)
        assert torch.equal(model(x, 700.0, cond), want)
    raw = torch.load(out / files.INFERENCE_PT, weights_only=True)
    assert set(raw) == {"generator", "generator_ema", "config"}
    from PIL import Image

    assert Image.open(out / files.CURVE).size == (720, 480)
    ok(cli("info", out / files.INFERENCE_ST, cwd=tmp_path))


def test_resume_and_extend_equal_one_straight_run(models, tmp_path):
    ok(train(models, tmp_path / "straight", cwd=tmp_path))
    half = [a if a != "4" else "2" for a in FAST]
    ok(train(models, tmp_path / "split", *half[2:], "--iterations", "2", cwd=tmp_path))
    res = ok(train(models, tmp_path / "split", "--resume", cwd=tmp_path))
    assert "resumed at iteration 2" in res.stderr
    a = files.load_train_state(tmp_path / "straight" / files.TRAIN_STATE)
    b = files.load_train_state(tmp_path / "split" / files.TRAIN_STATE)
    for key in ("generator", "critic", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    log = (tmp_path / "split" / files.LOG).read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in log] == [0, 1, 2, 3]
    assert log == (tmp_path / "straight" / files.LOG).read_text().splitlines() or all(
        json.loads(x)["critic_loss"] == json.loads(y)["critic_loss"]
        for x, y in zip(log, (tmp_path / "straight" / files.LOG).read_text().splitlines())
    )


def test_dry_run_prints_the_plan_and_trains_nothing(models, tmp_path):
    res = ok(train(models, tmp_path / "dry", "--dry-run", cwd=tmp_path))
    assert "memory plan" in res.stderr and "estimated peak" in res.stderr
    assert not any((tmp_path / "dry").glob("*"))


def test_refusals_before_anything_loads(models, tmp_path):
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    res = cli("train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
              "--teacher", models / "teacher.safetensors", "--prompts", tmp_path / "empty.txt",
              "--pseudo-text", *SIZE, "--out", tmp_path / "a", cwd=tmp_path)  # fmt: skip
    refused(res, "holds no prompts")
    # a full folder is never used for a new run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    refused(train(models, tmp_path / "full", cwd=tmp_path), "is not empty", "--resume")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"
    refused(train(models, tmp_path / "nothing", "--resume", cwd=tmp_path), "holds no training run")
    # the prompts need an encoder (or precomputed embeddings)
    res = cli("train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
              "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
              *SIZE, "--out", tmp_path / "b", cwd=tmp_path)  # fmt: skip
    refused(res, "--text-encoder")
    refused(train(models, tmp_path / "c", "--alpha", "-1", cwd=tmp_path), "alpha")
    refused(train(models, tmp_path / "d", "--micro-batch", "3", cwd=tmp_path), "micro_batch")
    refused(train(models, tmp_path / "e", "--sample-every", "2", cwd=tmp_path), "--vae")


def test_wrong_files_per_role_are_named(models, tmp_path):
    sd = random_state_dict(TINY)
    i2v = {**sd, "img_emb.proj.1.weight": torch.randn(64, 64)}
    i2v["patch_embedding.weight"] = torch.randn(TINY.dim, 36, 1, 2, 2)
    save_file(i2v, str(tmp_path / "i2v.safetensors"))
    res = cli("train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
              "--teacher", tmp_path / "i2v.safetensors", "--prompts", models / "prompts.txt",
              "--pseudo-text", *SIZE, "--out", tmp_path / "x", cwd=tmp_path)  # fmt: skip
    refused(res, "--teacher:", "image-to-video")
    from adastate_core.vae.random_weights import random_state_dict as random_vae

    save_file(random_vae(dim=8), str(tmp_path / "vae.safetensors"))
    res = cli("train", "--generator", models / "gen.pt", "--critic", tmp_path / "vae.safetensors",
              "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
              "--pseudo-text", *SIZE, "--out", tmp_path / "y", cwd=tmp_path)  # fmt: skip
    refused(res, "--critic:", "VAE")
    # a causal checkpoint as critic is allowed, and the log says so
    res = ok(cli("train", "--generator", models / "gen.pt", "--critic", models / "gen.pt",
                 "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
                 "--pseudo-text", *SIZE, *FAST, "--iterations", "1", "--out", tmp_path / "z",
                 cwd=tmp_path))  # fmt: skip
    assert "critic starts from the generator's own" in res.stderr


def test_resume_with_other_settings_is_refused(models, tmp_path):
    ok(train(models, tmp_path / "run", "--iterations", "1", cwd=tmp_path))
    before = (tmp_path / "run" / files.TRAIN_STATE).read_bytes()
    res = refused(train(models, tmp_path / "run", "--resume", "--alpha", "4", cwd=tmp_path),
                  "other settings", "alpha: saved 2.0, asked 4.0")  # fmt: skip
    assert "Traceback" not in res
    assert (tmp_path / "run" / files.TRAIN_STATE).read_bytes() == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(models, tmp_path):
    sd = random_state_dict(TINY, seed=1)
    sd["head.head.weight"] = torch.full_like(sd["head.head.weight"], float("nan"))
    hints = {"num_heads": TINY.num_heads, "text_len": TINY.text_len, "eps": TINY.eps}
    save_file(sd, str(tmp_path / "nan_critic.safetensors"), {"config": json.dumps(hints)})
    res = cli("train", "--generator", models / "gen.pt", "--critic", tmp_path / "nan_critic.safetensors",
              "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
              "--pseudo-text", *SIZE, *FAST, "--out", tmp_path / "run", cwd=tmp_path)  # fmt: skip
    refused(res, "NaN/inf", "last good checkpoint", "--resume")
    run = json.loads((tmp_path / "run" / files.RUN_JSON).read_text())
    assert run["step"] == 0  # the checkpoint written at the start is kept
    load_dit(tmp_path / "run" / files.INFERENCE_PT)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_saves_and_says_how_to_resume(models, tmp_path):
    args = [sys.executable, "-m", "adastate_core", "train", "--generator", models / "gen.pt",
            "--critic", models / "base.safetensors", "--teacher", models / "teacher.safetensors",
            "--prompts", models / "prompts.txt", "--pseudo-text", *SIZE, *FAST,
            "--out", tmp_path / "run"]  # fmt: skip
    args = [str(a) if a != "4" else "200" for a in args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    log = tmp_path / "run" / files.LOG
    deadline = time.time() + 240
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    assert "saved" in err and "--resume" in err and "Traceback" not in err
    run = json.loads((tmp_path / "run" / files.RUN_JSON).read_text())
    lines = log.read_text().splitlines()
    assert run["step"] == len(lines) >= 1
    state = files.load_train_state(tmp_path / "run" / files.TRAIN_STATE)
    assert state["step"] == run["step"]


def test_embeddings_saved_once_then_trained_from(models, tmp_path):
    emb = tmp_path / "emb.safetensors"
    res = ok(cli("train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
                 "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
                 "--pseudo-text", "--save-embeddings", emb, cwd=tmp_path))  # fmt: skip
    assert "3 prompts" in res.stdout
    from adastate_core.train import load_embeddings

    prompts, rows, negative = load_embeddings(emb)
    assert prompts == ["a red fox runs through snow", "a sailing boat at dusk", "a city street"]
    assert sorted(rows) == [0, 1, 2] and negative.shape[-1] == TINY.text_dim
    refused(cli("train", "--generator", models / "gen.pt", "--critic", models / "base.safetensors",
                "--teacher", models / "teacher.safetensors", "--prompts", models / "prompts.txt",
                "--pseudo-text", "--save-embeddings", emb, cwd=tmp_path), "never overwritten")  # fmt: skip
    common = ["--generator", models / "gen.pt", "--critic", models / "base.safetensors",
              "--teacher", models / "teacher.safetensors", *SIZE, *FAST, "--iterations", "2"]  # fmt: skip
    ok(cli("train", *common, "--embeddings", emb, "--out", tmp_path / "a", cwd=tmp_path))
    ok(cli("train", *common, "--prompts", models / "prompts.txt", "--pseudo-text",
           "--out", tmp_path / "b", cwd=tmp_path))  # fmt: skip
    a = files.load_train_state(tmp_path / "a" / files.TRAIN_STATE)["generator"]
    b = files.load_train_state(tmp_path / "b" / files.TRAIN_STATE)["generator"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_samples_and_the_comfyui_loader(models, tmp_path, monkeypatch):
    pytest.importorskip("av")
    from adastate_core.vae.random_weights import random_state_dict as random_vae

    save_file(random_vae(dim=8, seed=2), str(tmp_path / "vae.safetensors"))
    out = tmp_path / "run"
    ok(train(models, out, "--sample-every", "2", "--vae", tmp_path / "vae.safetensors",
             "--sample-prompts", "1", "--sample-seconds", "1", cwd=tmp_path))  # fmt: skip
    from adastate_core.io import count_frames, read_metadata

    videos = sorted((out / files.SAMPLES).iterdir())
    assert [v.name for v in videos] == ["iter000002_prompt0.mp4", "iter000004_prompt0.mp4"]
    assert count_frames(videos[0]) > 0
    assert read_metadata(videos[0])["prompt"] == "a red fox runs through snow"
    # the trained model in ComfyUI: Load AdaState Model lists and loads it
    sys.path.insert(0, str(REPO / "tests"))
    from fake_comfy import install

    host = install(monkeypatch, tmp_path / "comfy")
    folder = host.models_dir / "diffusion_models"
    folder.mkdir()
    (folder / "adastate_dmd.safetensors").symlink_to(out / files.INFERENCE_ST)
    from nodes import NODE_CLASS_MAPPINGS as NODES

    loader = NODES["AdaState_LoadModel"]
    assert "adastate_dmd.safetensors" in loader.INPUT_TYPES()["required"]["dit_name"][0]
    model = loader().load("adastate_dmd.safetensors", "default", "sdpa")[0]
    assert model is not None


def test_a_run_that_cannot_fit_is_refused_with_options(models, tmp_path, monkeypatch):
    import adastate_core.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    res = train(models, tmp_path / "run", cwd=tmp_path)
    refused(
        res, "does not fit", "estimated peak", "fp8", "1.3B base", "torchrun", "--no-memory-check"
    )
    assert not (tmp_path / "run" / files.TRAIN_STATE).exists()
    (tmp_path / "a_file").write_text("x")
    refused(train(models, tmp_path / "a_file", cwd=tmp_path), "is a file")
