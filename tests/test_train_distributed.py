"""`adastate train` under torchrun (gloo, CPU) on tiny random-weight models: two processes
train exactly what one process trains, only rank 0 writes into --out, and a stalled rank
cannot hang the suite (every torchrun here runs under a timeout and is cleaned up)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adastate_core.cli import main

from conftest import REPO, max_err

TIMEOUT = 240  # s for a whole torchrun; the tiny run takes 12-25 s on 2 CPU cores
TOL = 1e-5  # max abs difference of any weight, 1 vs 2 processes (float summation order)
ITERATIONS = 3
RUN_FILES = {  # everything a finished run without samples holds, nothing else
    "adastate_dmd.pt",
    "adastate_dmd.safetensors",
    "train_state.pt",
    "run.json",
    "log.jsonl",
    "loss_curve.png",
}

# torchrun's entry point: exactly `python -m adastate_core` (runpy, as -m does), after
# recording in RECORD/rank<R>.events this rank's pid, its first all-reduce and every file
# write it makes into --out (a Python audit hook: open for writing, rename, remove, mkdir,
# chmod). ADASTATE_TEST_STALL_RANK=r makes rank r never join its first all-reduce, so the
# other ranks wait in it forever (a hang).
ENTRY = r"""
import os, runpy, sys, time

_rank = os.environ.get("RANK", "0")
_out = os.path.realpath(os.environ["ADASTATE_TEST_OUT"])
_fd = os.open(os.path.join(os.environ["ADASTATE_TEST_RECORD"], f"rank{_rank}.events"),
              os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(_fd, f"pid {os.getpid()}\n".encode())
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
_busy = []

def _inside(path):
    if isinstance(path, int):
        return False
    p = os.path.realpath(os.path.abspath(os.fsdecode(path)))
    return p == _out or p.startswith(_out + os.sep)

def _hook(event, args):
    if _busy:
        return
    if event == "open":
        paths = [args[0]] if (args[2] or 0) & _WRITE else []
    elif event == "os.rename":
        paths = [args[0], args[1]]
    elif event in ("os.remove", "os.mkdir", "os.rmdir", "os.chmod", "os.truncate"):
        paths = [args[0]]
    else:
        return
    _busy.append(1)
    try:
        for p in paths:
            if _inside(p):
                os.write(_fd, f"{event} {os.fsdecode(p)}\n".encode())
    finally:
        _busy.pop()

sys.addaudithook(_hook)
import torch.distributed as dist

_all_reduce = dist.all_reduce
_stall = os.environ.get("ADASTATE_TEST_STALL_RANK") == _rank

def _first_all_reduce(*args, **kwargs):
    dist.all_reduce = _all_reduce
    os.write(_fd, b"stalled\n" if _stall else b"all_reduce\n")
    while _stall:
        time.sleep(60)
    return _all_reduce(*args, **kwargs)

dist.all_reduce = _first_all_reduce
runpy.run_module("adastate_core", run_name="__main__", alter_sys=True)
"""


_TORCHRUN_VARS = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                  "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"}  # fmt: skip


def writes(events: list[str]) -> list[str]:
    """The file writes among a rank's recorded events."""
    return [e for e in events if e.startswith(("open ", "os."))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, its parent gone) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class Torchrun:
    """`python -m torch.distributed.run --standalone --nproc_per_node N ENTRY args`, in its
    own session, output to a file; leaving the `with` block always ends it and its ranks
    (torchrun starts each rank in a session of its own, so its group alone is not enough)."""

    def __init__(self, folder: Path, args: list, *, out: Path, nproc: int = 2, env=None):
        folder.mkdir(parents=True)
        self.folder, self.record = folder, folder / "record"
        self.record.mkdir()
        entry = folder / "entry.py"
        entry.write_text(ENTRY)
        self.log = folder / "torchrun.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS},
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "ADASTATE_TEST_OUT": str(out),
            "ADASTATE_TEST_RECORD": str(self.record),
            **(env or {}),
        }
        self.cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={nproc}", str(entry), *map(str, args)]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Torchrun:
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(self.cmd, cwd=self.folder, env=self.env, stdout=fh,
                                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return self

    def wait(self, timeout: float) -> int | None:
        """torchrun's exit status, or None when it runs `timeout` s more (then it is stopped)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM to torchrun (it ends its ranks), then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        for pid in self.pids().values():
            with contextlib.suppress(ProcessLookupError):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)

    def events(self) -> dict[int, list[str]]:
        return {
            int(p.name[4:].split(".")[0]): p.read_text().splitlines()
            for p in sorted(self.record.glob("rank*.events"))
        }

    def pids(self) -> dict[int, int]:
        return {
            rank: int(lines[0].split()[1])
            for rank, lines in self.events().items()
            if lines and lines[0].startswith("pid ")
        }

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_models")
    assert main(["tiny-model", str(root / "gen.pt"), "--layout", "self-forcing"]) == 0
    assert main(["tiny-model", str(root / "base.safetensors"), "--seed", "1"]) == 0
    prompts = root / "prompts.txt"
    prompts.write_text("a red fox runs through snow\na sailing boat at dusk\na city street\n")
    return {"generator": root / "gen.pt", "critic": root / "base.safetensors", "prompts": prompts}


def train_args(models, out: Path, batch: int = 2) -> list[str]:
    # Learning rates large enough that a wrong gradient moves the weights by far more than
    # TOL (an AdamW step is ~lr). Generator updates at iterations 0 and 2; the EMA starts
    # after iteration 1 and is updated at iteration 2; checkpoints at the start, iteration 2
    # and the end.
    args = [
        "train",
        "--generator", models["generator"], "--critic", models["critic"],
        "--teacher", models["critic"], "--prompts", models["prompts"], "--pseudo-text",
        "--height", "32", "--width", "32", "--chunks", "2",
        "--iterations", str(ITERATIONS), "--batch", str(batch), "--gen-every", "2",
        "--ema-start", "2", "--save-every", "2", "--save-dtype", "fp32",
        "--gen-lr", "1e-3", "--critic-lr", "1e-3", "--seed", "3",
        "--device", "cpu",  # gloo, also on a machine with GPUs
        "--out", out,
    ]  # fmt: skip
    return [str(a) for a in args]


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def assert_same_log(one: list[dict], two: list[dict]) -> None:
    assert [e["iteration"] for e in one] == [e["iteration"] for e in two] == [0, 1, 2]
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in sorted(set(a) - {"seconds"}):
            x, y, where = a[key], b[key], f"iteration {a['iteration']}: {key}"
            if isinstance(x, float):
                np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-9, err_msg=where)
            elif isinstance(x, list):  # dmd_grad_abs_per_frame, rounded to 6 decimals
                np.testing.assert_allclose(y, x, rtol=1e-5, atol=2e-6, err_msg=where)
            else:  # iteration, update counts, exit steps, None
                assert x == y, where


def weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(max_err(a[k], b[k]) for k in a)


def optimizer_diff(a: dict, b: dict) -> float:
    """Max relative difference of the AdamW moments (exp_avg, exp_avg_sq) and step."""
    assert a["state"].keys() == b["state"].keys()
    worst = 0.0
    for i, sa in a["state"].items():
        sb = b["state"][i]
        assert sa.keys() == sb.keys()
        for k in sa:
            x, y = sa[k].double(), sb[k].double()
            worst = max(worst, ((x - y).abs() / (x.abs().max() + 1e-30)).max().item())
    return worst


class Runs:
    """The same tiny training, trained by 1 process (in this one) and by 2 (torchrun)."""

    def __init__(self, models, tmp_path: Path, monkeypatch, batch: int, extra: tuple = ()):
        for var in _TORCHRUN_VARS:  # the 1-process run must not think it is in a torchrun
            monkeypatch.delenv(var, raising=False)
        self.one, self.two = tmp_path / "one", tmp_path / "two"
        t0 = time.monotonic()
        with Torchrun(
            tmp_path / "torchrun", [*train_args(models, self.two, batch), *extra], out=self.two
        ) as run:
            rc = run.wait(TIMEOUT)
            self.output = run.output()
            assert rc is not None, f"torchrun ran past {TIMEOUT} s:\n{self.output[-3000:]}"
            assert rc == 0, self.output[-3000:]
        t1 = time.monotonic()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for the ranks
        try:
            assert main(train_args(models, self.one, batch)) == 0
        finally:
            torch.set_num_threads(threads)
        print(f"torchrun {t1 - t0:.1f} s, 1 process {time.monotonic() - t1:.1f} s")
        self.events = run.events()
        self.s1, self.s2 = (
            torch.load(o / "train_state.pt", map_location="cpu", weights_only=True)
            for o in (self.one, self.two)
        )
        self.log1, self.log2 = read_log(self.one), read_log(self.two)

    def weight_diffs(self) -> dict[str, float]:
        """Max abs difference of the weights, max relative difference of the AdamW moments."""
        s1, s2 = self.s1, self.s2
        assert s1["step"] == s2["step"] == ITERATIONS
        assert s1["generator_updates"] == s2["generator_updates"] == 2
        assert s1["config"] == s2["config"]
        diffs = {role: weight_diff(s1[role], s2[role]) for role in ("generator", "critic", "ema")}
        for role in ("generator_optimizer", "critic_optimizer"):
            diffs[role] = optimizer_diff(s1[role], s2[role])
        print(f"1 vs 2 processes, max differences: {diffs}")
        return diffs


def test_two_processes_train_what_one_trains_and_only_rank_0_writes(models, tmp_path, monkeypatch):
    # batch 2: each of the 2 processes takes one sample, so even the sums are the same
    runs = Runs(models, tmp_path, monkeypatch, batch=2)
    one, two, s1, output, events = runs.one, runs.two, runs.s1, runs.output, runs.events

    # weights: generator, critic and EMA (and the AdamW moments) after 3 critic and 2
    # generator updates
    diffs = runs.weight_diffs()
    assert max(diffs.values()) <= TOL, diffs
    # ...and the comparison is not vacuous: training moved every model far more than TOL
    from adastate_core.model.loader import load_dit

    start = {
        role: load_dit(models[role], weight_dtype=torch.float32).state_dict()
        for role in ("generator", "critic")
    }
    assert weight_diff(start["generator"], s1["generator"]) > 100 * TOL
    assert weight_diff(start["critic"], s1["critic"]) > 100 * TOL
    assert weight_diff(s1["ema"], s1["generator"]) > 100 * TOL  # the EMA was updated

    # the inference files hold the same weights
    p1, p2 = (
        torch.load(o / "adastate_dmd.pt", map_location="cpu", weights_only=True) for o in (one, two)
    )
    assert weight_diff(p1["generator"], p2["generator"]) <= TOL
    assert weight_diff(p1["generator_ema"], p2["generator_ema"]) <= TOL
    assert weight_diff(p1["generator_ema"], s1["ema"]) == 0.0
    st1, st2 = (load_file(str(o / "adastate_dmd.safetensors")) for o in (one, two))
    assert weight_diff(st1, st2) <= TOL

    # the log: same losses, grad norms and per-frame DMD gradients, identical exit steps
    assert_same_log(runs.log1, runs.log2)

    # run.json: the same settings, counts and files
    r1, r2 = (json.loads((o / "run.json").read_text()) for o in (one, two))
    assert r1 == r2

    # only rank 0 writes: both folders hold exactly a run's files (no temporary or probe
    # files), one log line per iteration (above), rank 1 never wrote into --out at all, and
    # only rank 0 spoke (one "done", one progress line per iteration)
    assert {p.name for p in one.iterdir()} == RUN_FILES
    assert {p.name for p in two.iterdir()} == RUN_FILES
    assert sorted(events) == [0, 1], events
    assert writes(events[1]) == [], f"rank 1 wrote into --out: {events[1]}"
    rank0 = {line.split()[1].rsplit(os.sep, 1)[-1] for line in writes(events[0])}
    assert RUN_FILES <= rank0  # the hook saw rank 0's writes: the check above can fail
    assert output.count("adastate train: done:") == 1, output[-3000:]
    for i in range(1, ITERATIONS + 1):
        assert output.count(f"iter {i}/{ITERATIONS} ") == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


@pytest.mark.slow
def test_an_uneven_batch_over_two_processes(models, tmp_path, monkeypatch):
    """Replicated models (--replicate; FSDP needs the same number of micro-batches on every
    process and refuses an uneven batch). Batch 3 over 2 processes: rank 0 takes samples 0 and 2 (two micro-batches), rank 1
    sample 1, so the gradient sums really are taken in another order. The losses and
    gradient norms agree to float precision; the weights only to a fraction of lr (AdamW
    divides by the gradient's size and so magnifies the rounding of a gradient that
    nearly cancels: measured 1e-5 to 8e-5 at lr 1e-3)."""
    runs = Runs(models, tmp_path, monkeypatch, batch=3, extra=("--replicate",))
    assert_same_log(runs.log1, runs.log2)
    diffs = runs.weight_diffs()
    assert max(diffs[r] for r in ("generator", "critic", "ema")) <= 3e-4, diffs
    assert any(
        "over 2 processes" in n for n in json.loads((runs.two / "run.json").read_text())["notes"]
    )
    assert writes(runs.events[1]) == [], f"rank 1 wrote into --out: {runs.events[1]}"


@pytest.mark.slow
def test_a_stalled_rank_cannot_hang_the_suite(models, tmp_path):
    """Rank 1 never joins its first all-reduce (as a rank that disagrees about the work
    would): rank 0 waits in it for gloo's 30 minutes, and torchrun with it. The launch's
    timeout must end torchrun and both ranks, and the test go on within seconds."""
    out = tmp_path / "out"
    env = {"ADASTATE_TEST_STALL_RANK": "1"}
    with Torchrun(tmp_path / "torchrun", train_args(models, out), out=out, env=env) as run:
        deadline = time.monotonic() + TIMEOUT
        while run.proc.poll() is None and time.monotonic() < deadline:
            events = run.events()
            if "stalled" in events.get(1, []) and "all_reduce" in events.get(0, []):
                break  # rank 0 is in the all-reduce that rank 1 never joins
            time.sleep(0.2)
        assert "stalled" in run.events().get(1, []), run.output()[-3000:]
        assert "all_reduce" in run.events().get(0, []), run.output()[-3000:]
        time.sleep(2)
        assert run.proc.poll() is None, run.output()[-3000:]  # hung, as it should
        pids = run.pids()
        begun = time.monotonic()
        assert run.wait(timeout=1) is None  # the timeout fires and stops everything
        stopped_in = time.monotonic() - begun
    print(f"stopped {stopped_in:.1f} s after the timeout")
    assert sorted(pids) == [0, 1]
    assert run.proc.poll() is not None
    assert not [pid for pid in pids.values() if _alive(pid)]
    assert stopped_in < 20, stopped_in
