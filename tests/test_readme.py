"""The README stays true: its Python example runs, its commands exist, the code is lint-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from adastate_core.model.random_weights import save_random_checkpoint

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    save_random_checkpoint(tmp_path / "tiny_dit.safetensors")
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_run_command_works(tmp_path):
    """`adastate demo` is the README's run command (tests/test_cli.py runs it end to end)."""
    assert "\nadastate demo\n" in README
    for args in (["tiny-model", "tiny_dit.safetensors"], ["info", "tiny_dit.safetensors"]):
        res = subprocess.run(
            [sys.executable, "-m", "adastate_core", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
    assert "ComfyUI repack safetensors, fp16" in res.stdout


def test_test_command_is_what_ci_runs():
    assert "python -m pytest -q" in README
    assert "python -m pytest -q" in (REPO / ".ci" / "run").read_text()


def test_ruff_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (it is in the test extra)")
    res = subprocess.run([ruff, "check", "."], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_train_example_runs_as_written(tmp_path):
    """The README's tiny `adastate train` commands, pasted into a shell, make a checkpoint that
    the loader reads."""
    import os
    from pathlib import Path

    block = next(
        b for b in re.findall(r"```bash\n(.*?)```", README, re.S) if "tiny-model gen.pt" in b
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        ["bash", "-e", "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "6 iterations = 6 critic updates and 2 generator updates" in res.stderr
    assert "ComfyUI repack safetensors" in res.stdout
    from adastate_core.model import load_dit

    load_dit(tmp_path / "tiny_run" / "adastate_dmd.safetensors")
