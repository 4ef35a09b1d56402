"""A second, independent reference: diffusers' WanTransformer3DModel with random weights,
converted to our layout by our own loader."""

from __future__ import annotations

import math

import pytest
import torch

from adastate_core.model import load_dit
from adastate_core.model.random_weights import TINY

from conftest import TOL, max_err

diffusers = pytest.importorskip("diffusers")


def diffusers_model(seed: int = 0, cfg=TINY):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
    )
    with torch.no_grad():  # randomise everything: the default init zeroes some tensors
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (p.shape[-1] ** -0.5 if p.ndim >= 2 else 0.3))
    return model.eval()


def float64_timestep_embedding(
    timesteps,
    embedding_dim,
    flip_sin_to_cos=False,
    downscale_freq_shift=1,
    scale=1,
    max_period=10000,
):
    """diffusers' sinusoid computed in float64 like the official Wan code (diffusers uses
    fp32, whose angle error at t ~ 1000 alone moves outputs by ~1e-5)."""
    half = embedding_dim // 2
    exponent = (
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float64)
        / (half - downscale_freq_shift)
    )
    emb = scale * timesteps[:, None].double() * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb.float()


@pytest.mark.parametrize("t", [999.0, 500.0, 37.0])
def test_matches_diffusers_forward(tmp_path, t, monkeypatch):
    import diffusers.models.embeddings as emb

    # diffusers' one deviation from the official code (measured at t = 999: 1.1e-5 with its fp32
    # sinusoid, 1.4e-6 with float64); everything else is diffusers' own code path
    monkeypatch.setattr(emb, "get_timestep_embedding", float64_timestep_embedding)
    ref = diffusers_model(seed=11)
    ref.save_pretrained(tmp_path / "transformer")
    ours = load_dit(tmp_path, text_len=TINY.text_len)  # heads from config.json
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 5, 8, 12, generator=g)
    ctx = torch.randn(1, 6, TINY.text_dim, generator=g)
    padded = torch.cat([ctx, ctx.new_zeros(1, TINY.text_len - 6, TINY.text_dim)], dim=1)
    with torch.no_grad():
        expected = ref(x, torch.tensor([t]), padded, return_dict=False)[0]
        got = ours(x, t, ctx)
    assert max_err(got, expected) <= TOL
