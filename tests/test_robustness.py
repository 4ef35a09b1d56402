"""The careless and hostile uses of ../shared/research/robustness_review.md, replayed: no
command destroys a file it did not create for this run, every refusal comes before any model
loads, every error is a message (never a traceback). Item ids (S1-1, ...) are the report's.
Runs the real `adastate` command on the tiny model set (tests/tiny_models.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from tiny_models import write_tiny_models  # noqa: E402

from adastate_core.io import count_frames, read_frames, read_metadata  # noqa: E402
from adastate_core.stream import StreamConfig  # noqa: E402

from conftest import REPO  # noqa: E402

SIZE = ["--height", "64", "--width", "96"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
INJECT = REPO / "tests" / "fault_inject"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emb")


def frames(chunks: int) -> int:
    return StreamConfig(height=64, width=96).frames_after(chunks)


def cli(*args, cwd, env=None, timeout=300):
    """`adastate ARGS` in folder `cwd`: in this process (what a user gets, without paying for
    a Python start-up per call), or as a real process when `env` is given."""
    if env is not None:
        return subprocess.run(
            [sys.executable, "-m", "adastate_core", *map(os.fsencode, map(str, args))],
            capture_output=True, text=True, cwd=cwd, timeout=timeout,
            env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        )  # fmt: skip
    from adastate_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exit_:  # argparse
                code = exit_.code
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def gen(models, cache, *args, cwd, **kw) -> subprocess.CompletedProcess:
    return cli(
        "generate", "--models-dir", models, "--cache-dir", cache, *SIZE, *args, cwd=cwd, **kw
    )


def ok(res) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    return res


def refused(res, *texts: str, code: int = 2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout[-1000:], res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr
    for text in texts:
        assert text in res.stderr, (text, res.stderr)
    return res.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_until(args, chunk: int, sig: int, cwd, twice: bool = False, env=None):
    proc = subprocess.Popen(
        [sys.executable, "-m", "adastate_core", "generate", *map(str, args)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )  # fmt: skip
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if f"chunk {chunk}/" in line:  # a batch prefixes "[k/n] "
            proc.send_signal(sig)
            if twice:
                proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(lines) + err


# -- S1: data loss ---------------------------------------------------------------------------------


def test_s1_1_outputs_are_never_overwritten(models, cache, tmp_path):
    # no --out: every run gets a new name
    ok(gen(models, cache, "--prompt", "a red fox", "--chunks", "1", cwd=tmp_path))
    first = sorted(tmp_path.glob("*.mp4"))
    keep = {p: digest(p) for p in first}
    ok(gen(models, cache, "--prompt", "a blue bird", "--chunks", "1", cwd=tmp_path))
    ok(gen(models, cache, "--prompt", "a red fox", "--chunks", "1", cwd=tmp_path))
    names = sorted(p.name for p in tmp_path.glob("*.mp4"))
    assert names == ["adastate_a_blue_bird_0_001.mp4", "adastate_a_red_fox_0_001.mp4",
                     "adastate_a_red_fox_0_002.mp4"]  # fmt: skip
    assert all(digest(p) == d for p, d in keep.items())

    # an existing --out is refused before anything loads; --overwrite replaces it
    precious = tmp_path / "holiday.mp4"
    precious.write_bytes(b"my holiday")
    err = refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", precious,
                      cwd=tmp_path), "holiday.mp4 exists", "--overwrite")  # fmt: skip
    assert "never overwrites" in err and precious.read_bytes() == b"my holiday"
    ok(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", precious, "--overwrite",
           cwd=tmp_path))  # fmt: skip
    assert count_frames(precious) == frames(1)

    # never written through a symbolic link, even with --overwrite (the link is replaced)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "v.mp4"
    link.symlink_to(victim)
    refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", link, cwd=tmp_path),
            "v.mp4 exists")  # fmt: skip
    ok(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", link, "--overwrite",
           cwd=tmp_path))  # fmt: skip
    assert victim.read_text() == "keep" and not link.is_symlink() and count_frames(link) == 9
    # an existing frame set likewise
    (tmp_path / "f_00001.png").write_bytes(b"not ours")
    refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "f.png",
                cwd=tmp_path), "already holds frames f_00001.png")  # fmt: skip
    assert (tmp_path / "f_00001.png").read_bytes() == b"not ours"
    assert not list(tmp_path.glob("*.incomplete")) and not list(tmp_path.glob(".*lock"))


def test_s1_2_save_state_never_replaces_the_video_a_model_or_a_foreign_file(
    models, cache, tmp_path
):
    vae = models / "vae" / "wan_2.1_vae.safetensors"
    before = digest(vae)
    video = tmp_path / "same.mp4"
    refused(gen(models, cache, "--prompt", "x", "--chunks", "2", "--out", video,
                "--save-state", video, cwd=tmp_path), "is the video itself")  # fmt: skip
    refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "a.mp4",
                "--save-state", vae, cwd=tmp_path), "is a model file in use")  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "b.mp4",
                "--save-state", notes, cwd=tmp_path), "is not an AdaState run state")  # fmt: skip
    assert digest(vae) == before and notes.read_text() == "mine"
    assert not video.exists() and not (tmp_path / "a.mp4").exists()

    # the state carries a checksum: a damaged state is refused, not resumed from
    state = tmp_path / "run.safetensors"
    ok(gen(models, cache, "--prompt", "x", "--chunks", "2", "--out", tmp_path / "c.mp4",
           "--save-state", state, cwd=tmp_path))  # fmt: skip
    data = bytearray(state.read_bytes())
    data[-100] ^= 0xFF  # bit rot in the last tensor's data
    state.write_bytes(bytes(data))
    refused(gen(models, cache, "--resume", state, "--chunks", "3", cwd=tmp_path),
            "is damaged", "checksum")  # fmt: skip


def test_s1_3_resume_never_splices_into_another_video(models, cache, tmp_path):
    state = tmp_path / "run.safetensors"
    ok(gen(models, cache, "--prompt", "a dog", "--seed", "5", "--chunks", "3", "--out",
           tmp_path / "v.mp4", "--save-state", state, cwd=tmp_path))  # fmt: skip
    other = tmp_path / "other.mp4"
    ok(gen(models, cache, "--prompt", "a cat", "--seed", "7", "--chunks", "5", "--out", other,
           cwd=tmp_path))  # fmt: skip
    keep = digest(other)
    err = refused(gen(models, cache, "--resume", state, "--chunks", "4", "--out", other,
                      cwd=tmp_path), "holds another video")  # fmt: skip
    assert "a cat" in err and "a dog" in err and digest(other) == keep


def test_s1_4_a_second_process_on_the_same_output_is_refused_at_once(models, cache, tmp_path):
    out = tmp_path / "same.mp4"
    first = subprocess.Popen(
        [sys.executable, "-m", "adastate_core", "generate", "--models-dir", str(models),
         "--cache-dir", str(cache), *SIZE, "--prompt", "a dog", "--chunks", "30", "--out",
         str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    try:
        for line in first.stderr:
            if line.startswith("chunk 1/"):
                break
        for extra in ([], ["--overwrite"]):
            err = refused(gen(models, cache, "--prompt", "a cat", "--chunks", "5", "--out", out,
                              *extra, cwd=tmp_path), "in use by another adastate process")  # fmt: skip
            assert f"pid {first.pid}" in err
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=300)
    assert read_metadata(out)["prompt"] == "0:a dog"  # the first run's video, whole chunks
    assert count_frames(out) in {frames(k) for k in range(1, 31)}


def test_s1_5_batch_skips_by_content_not_name(models, cache, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text("a red fox?\nthe river\n")
    vids = tmp_path / "vids"
    ok(gen(models, cache, "--prompts", batch, "--chunks", "1", "--out", vids, cwd=tmp_path))
    first = {p.name: digest(p) for p in vids.glob("*.mp4")}
    assert sorted(first) == ["0001_a_red_fox.mp4", "0002_the_river.mp4"]
    batch.write_text("a red fox.\nthe river\n")  # same slugs, one prompt edited
    err = ok(gen(models, cache, "--prompts", batch, "--chunks", "1", "--out", vids,
                 cwd=tmp_path)).stderr  # fmt: skip
    assert "redo" in err and "0001_a_red_fox.mp4: it holds another prompt" in err
    assert "skip" in err and digest(vids / "0002_the_river.mp4") == first["0002_the_river.mp4"]
    assert read_metadata(vids / "0001_a_red_fox.mp4")["prompt"] == "0:a red fox."
    # another seed or length: every video is redone
    err = ok(gen(models, cache, "--prompts", batch, "--chunks", "2", "--seed", "9", "--out",
                 vids, cwd=tmp_path)).stderr  # fmt: skip
    assert err.count("redo") == 2
    assert all(count_frames(p) == frames(2) for p in vids.glob("*.mp4"))
    # a file adastate did not make is never replaced by a batch
    (vids / "0001_a_red_fox.mp4").write_bytes(b"not a video")
    refused(gen(models, cache, "--prompts", batch, "--chunks", "2", "--seed", "9", "--out",
                vids, cwd=tmp_path), "was not made by adastate", "--overwrite")  # fmt: skip


# -- S2 ----------------------------------------------------------------------------------------------


def test_s2_1_png_batches_skip_and_redo(models, cache, tmp_path):
    batch = tmp_path / "p.txt"
    batch.write_text("a red fox\na dog\n")
    out = tmp_path / "png"
    args = ["--prompts", batch, "--chunks", "2", "--out", out, "--format", "png"]
    ok(gen(models, cache, *args, cwd=tmp_path))
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert len(stamps) == 2 * frames(2)
    err = ok(gen(models, cache, *args, cwd=tmp_path)).stderr
    assert err.count("finished (same prompt") == 2
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    # a batch killed during its second video: the re-run keeps video 1 and redoes video 2
    for p in out.glob("0002_*"):
        p.unlink()
    code, _ = run_until(["--models-dir", models, "--cache-dir", cache, *SIZE, *args], 1,
                        signal.SIGKILL, tmp_path)  # fmt: skip
    assert code == -signal.SIGKILL
    err = ok(gen(models, cache, *args, cwd=tmp_path)).stderr
    assert "skip" in err and "0001_a_red_fox.png" in err
    assert len(list(out.glob("0002_a_dog_*.png"))) == frames(2)


@pytest.mark.parametrize("case", ["missing", "truncated", "random", "folder", "the_video"])
def test_s2_2_resume_from_a_missing_or_damaged_state_is_a_message(models, cache, tmp_path, case):
    state = tmp_path / "run.safetensors"
    if case != "missing":
        ok(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "v.mp4",
               "--save-state", state, cwd=tmp_path))  # fmt: skip
    if case == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif case == "random":
        state.write_bytes(os.urandom(5000))
    elif case == "folder":
        state.unlink()
        state.mkdir()
    elif case == "the_video":
        state = tmp_path / "v.mp4"
    text = {"missing": "not found", "folder": "is a folder"}.get(case, "not a readable stream")
    if case == "the_video":
        text = "not a readable stream state"
    refused(gen(models, cache, "--resume", state, "--chunks", "3", cwd=tmp_path), text)


@pytest.mark.parametrize(
    "args,text",
    [
        (["--seconds", "1e9"], "more than the"),
        (["--seconds", "nan"], "finite number"),
        (["--seconds", "inf"], "finite number"),
        (["--chunks", "1", "--prompt", "0:a | 99999999999:b"], "more than the"),
    ],
)
def test_s2_3_huge_or_non_finite_lengths_are_refused_at_once(models, cache, tmp_path, args, text):
    if "--prompt" not in args:
        args = [*args, "--prompt", "x"]
    refused(gen(models, cache, *args, cwd=tmp_path, timeout=120), text)
    assert not list(tmp_path.iterdir())


def test_s2_4_s2_5_impossible_or_invalid_requests_are_refused_before_the_encoder(models, tmp_path):
    fresh = tmp_path / "fresh_emb"
    for extra, text in (
        (["--height", "8192", "--width", "8192"], "GiB"),
        (["--height", "100"], "height 100 must be a positive multiple of 16"),
        (["--shift", "inf"], "shift must be finite"),
        (["--shift", "1e-30"], "shift must be between"),
        (["--crf", "99"], "--crf for mp4 must be between 0 and 51"),
        (["--fps", "0"], "--fps must be between"),
        (["--steps", "0.0001"], "steps must lie in [1, 1000]"),
        (["--steps", "250,500,1000"], "strictly decreasing"),
        (["--steps", "1000,,250"], "comma-separated"),
        (["--seed", "-1"], "seed must be between 0 and 2^64-1"),
        (["--seed", str(2**70)], "seed must be between 0 and 2^64-1"),
        (["--device", "bogus"], "is not a device"),
    ):
        args = ["--prompt", "probe", "--chunks", "1", "--out", tmp_path / "o.mp4", *extra]
        res = cli("generate", "--models-dir", models, "--cache-dir", fresh, *args, cwd=tmp_path)
        refused(res, text)
        assert not fresh.exists(), f"the text encoder ran before refusing {extra}"
        assert not (tmp_path / "o.mp4").exists()
    if not __import__("torch").cuda.is_available():
        res = cli("generate", "--models-dir", models, "--cache-dir", fresh, "--prompt", "x",
                  "--chunks", "1", "--device", "cuda", cwd=tmp_path)  # fmt: skip
        refused(res, "no CUDA GPU")


def test_s2_6_unwritable_state_and_cache(models, cache, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    refused(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "v.mp4",
                "--save-state", blocker / "run.safetensors", cwd=tmp_path),
            "cannot write the run state")  # fmt: skip
    assert not (tmp_path / "v.mp4").exists()
    # an unusable prompt cache is a warning: the run goes on
    res = ok(cli("generate", "--models-dir", models, "--cache-dir", blocker, *SIZE, "--prompt",
                 "a new prompt", "--chunks", "1", "--out", tmp_path / "w.mp4", cwd=tmp_path))  # fmt: skip
    assert "warning" in res.stderr and count_frames(tmp_path / "w.mp4") == frames(1)


def test_s2_7_empty_model_files(models, cache, tmp_path):
    for kind, flag in (("dit", "--dit"), ("vae", "--vae"), ("text", "--text-encoder")):
        empty = tmp_path / f"{kind}.pt"
        empty.write_bytes(b"")
        refused(gen(models, cache, flag, empty, "--prompt", "x", "--chunks", "1", cwd=tmp_path),
                "is empty (0 bytes)")  # fmt: skip
    refused(cli("info", tmp_path / "dit.pt", cwd=tmp_path), "is empty (0 bytes)")


def test_s2_8_a_model_that_makes_nan_stops_with_a_message(models, cache, tmp_path):
    import torch

    from adastate_core.model import load_state_dict
    from adastate_core.model.random_weights import TINY, save_random_checkpoint

    nan = tmp_path / "nan_dit.safetensors"
    save_random_checkpoint(nan, TINY, seed=1)
    sd = load_state_dict(nan)
    sd["head.head.weight"] = torch.full_like(sd["head.head.weight"], float("nan"))
    from safetensors.torch import save_file

    save_file(sd, str(nan), {"config": '{"num_heads": 4, "text_len": 16}'})
    out = tmp_path / "black.mp4"
    refused(gen(models, cache, "--dit", nan, "--prompt", "x", "--chunks", "2", "--out", out,
                cwd=tmp_path), "produced NaN or inf values in chunk 1")  # fmt: skip
    assert not out.exists()  # nothing reached it: the empty file was removed


def test_s2_9_png_run_killed_in_its_first_chunk_can_start_over(models, cache, tmp_path):
    out = tmp_path / "f.png"
    state = tmp_path / "run.safetensors"
    args = ["--prompt", "x", "--chunks", "3", "--out", out, "--save-state", state]
    res = gen(models, cache, *args, cwd=tmp_path,
              env={"PYTHONPATH": str(INJECT), "ADASTATE_KILL_AT": "png_frame:5"})  # fmt: skip
    assert res.returncode == -signal.SIGKILL and len(list(tmp_path.glob("f_*.png"))) == 5
    # no state was saved: --resume says so; the same command says what to do; --overwrite works
    refused(gen(models, cache, "--resume", state, cwd=tmp_path), "not found")
    refused(gen(models, cache, *args, cwd=tmp_path), "already holds frames f_00001.png",
            "--overwrite")  # fmt: skip
    ok(gen(models, cache, *args, "--overwrite", cwd=tmp_path))
    assert count_frames(out) == frames(3)


# -- S3 -------------------------------------------------------------------------------------------


def test_s3_text_files_and_prompts(models, cache, tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("0: un renard \xe9l\xe9gant".encode("latin-1"))
    refused(gen(models, cache, "--schedule", latin, "--chunks", "1", cwd=tmp_path),
            "is not UTF-8 text")  # fmt: skip
    refused(gen(models, cache, "--prompts", latin, "--chunks", "1", cwd=tmp_path),
            "is not UTF-8 text")  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "adastate_core", "generate", "--models-dir", str(models),
         "--cache-dir", str(cache), *SIZE, "--chunks", "1", "--prompt", b"fox \xff\xfe"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    refused(res, "not valid UTF-8")
    bom = tmp_path / "bom.txt"
    bom.write_text("\ufeff0: a red fox\n", encoding="utf-8")
    ok(gen(models, cache, "--schedule", bom, "--chunks", "1", "--out", tmp_path / "b.mp4",
           cwd=tmp_path))  # fmt: skip
    bad = tmp_path / "batch.txt"
    bad.write_text("a red fox\n\n0:a | 0:b\n")
    refused(gen(models, cache, "--prompts", bad, "--chunks", "1", cwd=tmp_path), "line 3")
    refused(gen(models, cache, "--prompt", "0:a | 0.1:b | 0.2:c", "--chunks", "4", cwd=tmp_path),
            "at 0.1 s and 0.2 s would start in the same chunk")  # fmt: skip
    refused(gen(models, cache, "--prompt", "#1 trick", "--chunks", "1", cwd=tmp_path),
            "only a comment")  # fmt: skip
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["b.mp4"]


def test_s3_6_s3_8_resume_keeps_its_settings_and_finds_its_video(models, cache, tmp_path):
    run1 = tmp_path / "run1"
    run1.mkdir()
    ok(gen(models, cache, "--prompt", "a dog", "--seed", "5", "--chunks", "2", "--out", "clip.mp4",
           "--save-state", "run.safetensors", cwd=run1))  # fmt: skip
    for flag, value in (("--seed", "99"), ("--anchor", "static"), ("--height", "128"),
                        ("--steps", "1000,500"), ("--prompt", "a cat")):  # fmt: skip
        err = refused(gen(models, cache, "--resume", run1 / "run.safetensors", "--chunks", "3",
                          flag, value, cwd=tmp_path), flag if flag != "--prompt" else "--prompt")  # fmt: skip
        assert "drop" in err
    # the same values as saved are fine; resumed from another folder it finds its video
    other = tmp_path / "elsewhere"
    other.mkdir()
    ok(gen(models, cache, "--resume", run1 / "run.safetensors", "--chunks", "3", "--seed", "5",
           cwd=other))  # fmt: skip
    assert count_frames(run1 / "clip.mp4") == frames(3) and not list(other.iterdir())
    full = tmp_path / "full.mp4"
    ok(gen(models, cache, "--prompt", "a dog", "--seed", "5", "--chunks", "3", "--out", full,
           cwd=tmp_path))  # fmt: skip
    assert np.array_equal(read_frames(run1 / "clip.mp4"), read_frames(full))


def test_s3_7_s3_9_tiny_model_and_info(tmp_path):
    ok(cli("tiny-model", tmp_path / "t.pt", cwd=tmp_path))  # a safetensors file named .pt
    assert "ComfyUI repack" in ok(cli("info", tmp_path / "t.pt", cwd=tmp_path)).stdout
    before = digest(tmp_path / "t.pt")
    refused(cli("tiny-model", tmp_path / "t.pt", cwd=tmp_path), "exists", "never overwritten")
    refused(cli("tiny-model", tmp_path, cwd=tmp_path), "a folder")
    assert digest(tmp_path / "t.pt") == before
    garbage = tmp_path / "g.pt"
    garbage.write_bytes(bytes(range(1, 255)))
    refused(cli("info", garbage, cwd=tmp_path), "neither a safetensors file nor a PyTorch")


# -- S4 and the top level ---------------------------------------------------------------------------


def test_s4_double_ctrl_c_keeps_the_resume_hint_and_png_message(models, cache, tmp_path):
    out, state = tmp_path / "v.mp4", tmp_path / "run.safetensors"
    code, err = run_until(["--models-dir", models, "--cache-dir", cache, *SIZE, "--prompt", "x",
                           "--chunks", "40", "--out", out, "--save-state", state], 1,
                          signal.SIGINT, tmp_path, twice=True)  # fmt: skip
    assert code == 130 and f"continue with --resume {state}" in err and "Traceback" not in err
    res = ok(gen(models, cache, "--prompt", "x", "--chunks", "1", "--out", tmp_path / "s.png",
                 cwd=tmp_path))  # fmt: skip
    assert "wrote s_00001.png … s_00009.png: 9 frames" in res.stdout


def test_unexpected_errors_are_one_line_with_debug_for_the_traceback(models, cache, tmp_path):
    """A bug anywhere becomes one line and exit 1; --debug shows the traceback."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import adastate_core.pipeline as p\n"
        "def boom(*a, **k):\n    raise ZeroDivisionError('simulated bug')\n"
        "p.generate = boom\n"
        "import adastate_core.generate_cmd as g\n"
        "g.generate = boom\n"
    )
    env = {"PYTHONPATH": str(hook)}
    args = ["--prompt", "x", "--chunks", "1", "--out", tmp_path / "v.mp4"]
    err = refused(gen(models, cache, *args, cwd=tmp_path, env=env), "simulated bug", code=1)
    assert "--debug" in err
    res = cli("--debug", "generate", "--models-dir", models, "--cache-dir", cache, *SIZE, *args,
              cwd=tmp_path, env=env)  # fmt: skip
    assert res.returncode == 1 and "Traceback" in res.stderr


# -- the property ----------------------------------------------------------------------------------


def test_property_files_a_user_made_survive_any_sequence_of_runs(models, cache, tmp_path):
    """Random sequences of runs, kills and resumes over one folder holding the user's own files:
    afterwards each of those files is byte-identical unless --overwrite named it."""
    folder = tmp_path / "work"
    folder.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("outside")
    user = {
        "holiday.mp4": b"my holiday video",
        "notes.txt": b"notes",
        "run_mine.safetensors": b"not a state",
    }
    for name, data in user.items():
        (folder / name).write_bytes(data)
    (folder / "link.mp4").symlink_to(outside)
    rng = random.Random(8)
    names = ["holiday.mp4", "link.mp4", "new_a.mp4", "new_b.gif", "frames.png", None]
    states = ["run_mine.safetensors", "holiday.mp4", "s1.safetensors", None]
    overwritten: set[str] = set()
    for step in range(16):
        out = rng.choice(names)
        state = rng.choice(states)
        args = ["--prompt", rng.choice(["a fox", "a dog"]), "--chunks", str(rng.randint(1, 3)),
                "--seed", str(rng.randint(0, 2))]  # fmt: skip
        if out:
            args += ["--out", out]
        if state:
            args += ["--save-state", state]
        if out in user and rng.random() < 0.3:
            args.append("--overwrite")
            overwritten.add(out)
        action = rng.choice(["run", "run", "kill", "resume"])
        if action == "resume" and state and (folder / state).exists():
            gen(models, cache, "--resume", state, "--chunks", "4", cwd=folder)
        elif action == "kill":
            run_until(["--models-dir", models, "--cache-dir", cache, *SIZE, *args], 1,
                      signal.SIGKILL, folder)  # fmt: skip
        else:
            gen(models, cache, *args, cwd=folder)
        for name, data in user.items():
            if name not in overwritten:
                assert (folder / name).read_bytes() == data, (step, name, args)
        assert outside.read_text() == "outside", (step, args)


def test_s2_5_s2_8_wrong_or_broken_model_files_are_refused_before_the_encoder(models, tmp_path):
    import torch
    from safetensors.torch import save_file

    from adastate_core.model.random_weights import TINY, random_state_dict

    fresh = tmp_path / "emb"
    ints = tmp_path / "int_dit.safetensors"
    save_file({k: (v * 100).to(torch.int32) for k, v in random_state_dict(TINY).items()},
              str(ints))  # fmt: skip
    for flag, path, text in (
        ("--dit", models / "vae" / "wan_2.1_vae.safetensors", "a VAE, not a diffusion model"),
        ("--dit", ints, "stores weights as int32"),
        ("--vae", models / "diffusion_models" / "self_forcing_dmd.pt", "is a Wan DiT"),
    ):
        res = cli("generate", "--models-dir", models, "--cache-dir", fresh, *SIZE, flag, path,
                  "--prompt", "x", "--chunks", "1", "--out", tmp_path / "o.mp4", cwd=tmp_path)  # fmt: skip
        refused(res, text)
        assert not fresh.exists(), f"the text encoder ran before refusing {path.name}"


def test_s3_5_unreadable_model_file(monkeypatch, tmp_path):
    from adastate_core.errors import CheckpointError
    from adastate_core.model import loader, read_checkpoint

    path = tmp_path / "locked.pt"
    path.write_bytes(b"x" * 100)

    def denied(_):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(loader, "sniff", denied)  # root reads anything: simulate the refusal
    with pytest.raises(CheckpointError, match="permission denied; fix its permissions"):
        read_checkpoint(path)


def test_s3_10_one_failing_video_does_not_stop_a_batch(models, cache, tmp_path):
    batch = tmp_path / "b.txt"
    long = " ".join(["fox"] * 40)  # more tokens than the tiny model's text length
    batch.write_text(f"a red fox\n{long}\nthe river\n")
    err = refused(gen(models, cache, "--prompts", batch, "--chunks", "1", "--out",
                      tmp_path / "v", cwd=tmp_path), "line 2", "1 of 3 videos failed")  # fmt: skip
    assert "shorten the prompt" in err
    assert sorted(p.name for p in (tmp_path / "v").glob("*.mp4")) == [
        "0001_a_red_fox.mp4", "0003_the_river.mp4"]  # fmt: skip


def test_s3_12_a_broken_text_encoder_is_named(models, tmp_path):
    from safetensors.torch import load_file, save_file

    te = load_file(str(models / "text_encoders" / "umt5_xxl_fp16.safetensors"))
    broken = tmp_path / "umt5_nan.safetensors"
    save_file({k: v if k == "spiece_model" else v * float("nan") for k, v in te.items()},
              str(broken))  # fmt: skip
    fresh = tmp_path / "emb"
    res = cli("generate", "--models-dir", models, "--cache-dir", fresh, *SIZE, "--text-encoder",
              broken, "--prompt", "a fox", "--chunks", "1", cwd=tmp_path)  # fmt: skip
    refused(res, "umt5_nan.safetensors produced NaN or inf values", "download it again")
    assert not list(fresh.rglob("*.safetensors"))  # nothing cached
