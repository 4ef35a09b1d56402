"""Attention backends: torch SDPA (default), SDPA with cuDNN's kernel first ("cudnn", for
Hopper GPUs) and SageAttention (CUDA, fp16/bf16) when asked for."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger("adastate")

BACKENDS = ("sdpa", "cudnn", "sageattention")
AttentionFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """q: [B, Lq, H, D], k, v: [B, Lk, H, D] -> [B, Lq, H, D]; scale 1/sqrt(D).
    mask: optional boolean [Lq, Lk], True where a query may attend."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def sdpa_cudnn_first(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """SDPA preferring cuDNN's attention kernel, then FlashAttention (on Hopper cuDNN's is
    ≈ 1.7-2.3x faster than PyTorch's FlashAttention-2, which SDPA picks by default); any
    other device runs plain SDPA (on the CPU: the same numbers as `sdpa`)."""
    if not q.is_cuda:
        return sdpa(q, k, v)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [
        SDPBackend.CUDNN_ATTENTION,
        SDPBackend.FLASH_ATTENTION,
        SDPBackend.EFFICIENT_ATTENTION,
        SDPBackend.MATH,
    ]
    with sdpa_kernel(order, set_priority=True):
        return sdpa(q, k, v)


def token_mask(frame_mask: Tensor, tokens_per_frame: int) -> Tensor:
    """Frame-level boolean mask [Fq, Fk] -> token-level [Fq*N, Fk*N]."""
    m = frame_mask.to(torch.bool)
    return m.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


_notified: set[str] = set()


def _notice(message: str) -> None:
    if message not in _notified:
        _notified.add(message)
        log.warning(message)


def _sage_or_sdpa(sageattn: Callable[..., Tensor]) -> AttentionFn:
    def attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
        _notice(
            f"sageattention needs CUDA fp16/bf16 tensors (got {q.device} {q.dtype}); using sdpa"
        )
        return sdpa(q, k, v)

    return attend


def get_backend(name: str) -> AttentionFn:
    """The attention function for `name`; sageattention falls back to sdpa with a notice."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "sdpa":
        return sdpa
    if name == "cudnn":
        return sdpa_cudnn_first
    try:
        from sageattention import sageattn  # type: ignore[import-not-found]
    except Exception as err:  # not installed, or its CUDA build does not load
        _notice(f"sageattention unavailable ({type(err).__name__}: {err}); using sdpa")
        return sdpa
    if not torch.cuda.is_available():
        _notice("sageattention needs a CUDA GPU; using sdpa")
        return sdpa
    return _sage_or_sdpa(sageattn)
