"""A plain-torch module tree shaped like ComfyUI's `comfy.ldm.wan.model.WanModel` (the official
layer names, a Conv3d patch embedding, torch RMSNorm / LayerNorm layers, bare modulation
Parameters, the config as attributes). No ComfyUI code: built from the public layer names and
shapes, to drive ExternalWanDiT in CI without a ComfyUI checkout."""

from __future__ import annotations

import torch
from torch import nn

from adastate_core.model import WanConfig


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.num_heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)
        self.norm_k = nn.RMSNorm(dim, eps=eps, elementwise_affine=True)


class _Block(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.self_attn = _Attention(d, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(d, cfg.eps, elementwise_affine=True)
        self.cross_attn = _Attention(d, cfg.num_heads, cfg.eps)
        self.norm2 = nn.LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d)
        )
        self.modulation = nn.Parameter(torch.zeros(1, 6, d))


class _Head(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.patch_channels)
        self.modulation = nn.Parameter(torch.zeros(1, 2, cfg.dim))


class ComfyLikeWanModel(nn.Module):
    def __init__(self, cfg: WanConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        d = cfg.dim
        self.model_type = "t2v"
        self.patch_size = cfg.patch_size
        self.text_len, self.in_dim, self.dim, self.ffn_dim = (
            cfg.text_len,
            cfg.in_dim,
            d,
            cfg.ffn_dim,
        )
        self.freq_dim, self.text_dim, self.out_dim = cfg.freq_dim, cfg.text_dim, cfg.out_dim
        self.num_heads, self.num_layers, self.eps = cfg.num_heads, cfg.num_layers, cfg.eps
        # ComfyUI keeps the patch embedding in fp32 whatever the model dtype
        self.patch_embedding = nn.Conv3d(
            cfg.in_dim, d, cfg.patch_size, stride=cfg.patch_size, dtype=torch.float32
        )
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, d, dtype=dtype),
            nn.GELU(approximate="tanh"),
            nn.Linear(d, d, dtype=dtype),
        )
        self.time_embedding = nn.Sequential(
            nn.Linear(cfg.freq_dim, d, dtype=dtype), nn.SiLU(), nn.Linear(d, d, dtype=dtype)
        )
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d, dtype=dtype))
        self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.num_layers))
        self.head = _Head(cfg)
        for name, module in self.named_modules():
            if name.startswith(("blocks", "head")):
                module.to(dtype)


def comfy_like(cfg: WanConfig, weights: dict, dtype: torch.dtype = torch.float32):
    """The tree with `weights` (official names) loaded, in `dtype` (patch embedding fp32)."""
    tree = ComfyLikeWanModel(cfg, dtype)
    tree.load_state_dict(weights, strict=True)
    return tree.eval().requires_grad_(False)
