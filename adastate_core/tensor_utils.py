"""Tensor helpers shared across the library."""

from __future__ import annotations

from torch import Tensor


def tensor_version(t: Tensor) -> int:
    """The in-place modification counter of `t`; inference-mode tensors (ComfyUI runs nodes
    under `torch.inference_mode()`) have none and report 0."""
    return 0 if t.is_inference() else t._version
