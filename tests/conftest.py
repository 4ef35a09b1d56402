"""Shared test helpers: the golden fixtures beside the checkout, tiny random-weight models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from adastate_core.model import CausalWanDiT, WanConfig
from adastate_core.model.random_weights import TINY, random_state_dict

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("ADASTATE_FIXTURES", REPO.parent / "shared" / "fixtures"))
TOL = 1e-5  # max abs error vs the official code in fp32


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(
            f"golden fixture {path} is missing: the parity tests need ../shared/fixtures beside "
            "the checkout (or ADASTATE_FIXTURES pointing at it)"
        )
    return path


def load_fixture(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    path = fixture_path(name)
    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    return load_file(str(path)), meta


def fixture_config(meta: dict) -> WanConfig:
    c = json.loads(meta["config"])
    return WanConfig(
        dim=c["dim"],
        ffn_dim=c["ffn_dim"],
        num_heads=c["num_heads"],
        num_layers=c["num_layers"],
        freq_dim=c["freq_dim"],
        text_dim=c["text_dim"],
        text_len=c["text_len"],
        in_dim=c["in_dim"],
        out_dim=c["out_dim"],
        patch_size=tuple(c["patch_size"]),
        eps=c["eps"],
    )


@pytest.fixture(scope="session")
def dit_fixture():
    """(model with the fixture weights, tensors dict) of wan_dit_tiny.safetensors."""
    tensors, meta = load_fixture("wan_dit_tiny.safetensors")
    model = CausalWanDiT(fixture_config(meta))
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights, strict=True)
    return model.eval().requires_grad_(False), tensors


def tiny_model(seed: int = 0, config: WanConfig = TINY, **kwargs) -> CausalWanDiT:
    model = CausalWanDiT(config, **kwargs)
    model.load_state_dict(random_state_dict(config, seed), strict=True)
    return model.eval().requires_grad_(False)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# the marks of the tests that run a real ComfyUI (tests/test_comfyui_*.py)
REAL_COMFYUI = [
    pytest.mark.comfyui,
    pytest.mark.skipif(
        not os.environ.get("COMFYUI_DIR"),
        reason="set COMFYUI_DIR to a ComfyUI checkout (and COMFYUI_PYTHON to its venv's python)",
    ),
]
