"""Packaging contracts: the ComfyUI entry point imports without ComfyUI; the core never
imports ComfyUI; pyproject keeps torch out of the hard dependencies."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import tomllib

from conftest import REPO


def test_comfyui_entry_point_imports_without_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('adastate_pack', r'{REPO / '__init__.py'}',"
        f" submodule_search_locations=[r'{REPO}'])\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['adastate_pack'] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "assert isinstance(mod.NODE_CLASS_MAPPINGS, dict)\n"
        "assert isinstance(mod.NODE_DISPLAY_NAME_MAPPINGS, dict)\n"
        "assert mod.WEB_DIRECTORY == './js'\n"
        "assert not any(m == 'comfy' or m.startswith(('comfy.', 'folder_paths', 'server'))"
        " for m in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0, res.stderr


def test_core_never_imports_comfyui():
    pattern = re.compile(r"^\s*(import|from)\s+(comfy|comfy_api|folder_paths|server|nodes)\b", re.M)
    offenders = [p for p in (REPO / "adastate_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_pyproject_contract():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = meta["project"]
    assert not any(
        d.split("[")[0].strip().lower().startswith("torch") for d in project["dependencies"]
    )
    assert "comfyui" not in project["name"].lower()
    assert project["scripts"]["adastate"] == "adastate_core.cli:main"
    assert {"test", "text"} <= set(project["optional-dependencies"])
    assert {"PublisherId", "DisplayName", "Icon"} <= set(meta["tool"]["comfy"])
    reqs = [
        line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
    ]
    assert sorted(r for r in reqs if r) == sorted(project["dependencies"])
    assert importlib.util.find_spec("adastate_core") is not None
