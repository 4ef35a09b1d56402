"""ExternalWanDiT: the stream's math over another program's Wan module tree (a plain-torch
tree shaped like ComfyUI's WanModel, tests/comfy_like.py) against the official fixtures, our
own DiT, and the checks that refuse other models."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from adastate_core.errors import CheckpointError
from adastate_core.model import CausalWanDiT
from adastate_core.model.external import ExternalWanDiT, check_t2v_tree
from adastate_core.model.random_weights import TINY, random_state_dict
from adastate_core.stream import StreamConfig, init_stream
from adastate_core.stream.iterate import stream_chunks

from comfy_like import comfy_like
from conftest import TOL, fixture_config, load_fixture, max_err


@pytest.fixture(scope="module")
def external():
    tensors, meta = load_fixture("wan_dit_tiny.safetensors")
    cfg = fixture_config(meta)
    weights = {k[len("weights.") :]: v for k, v in tensors.items() if k.startswith("weights.")}
    tree = comfy_like(cfg, weights)
    dit = ExternalWanDiT(tree, compute_dtype=torch.float32, device="cpu")
    return dit, tensors, cfg, weights


def test_config_read_from_the_tree(external):
    dit, _, cfg, _ = external
    assert dit.config == cfg


def test_full_attention_matches_official(external):
    dit, fx, _, _ = external
    with torch.no_grad():
        out = dit(fx["in.x"], fx["in.t"], fx["in.context"])
    assert max_err(out, fx["out.bidirectional"]) <= TOL


def test_kv_cached_chunks_match_block_causal(external):
    dit, fx, _, _ = external
    x, t, ctx = fx["in.x"], fx["in.t"], dit.encode_context(fx["in.context"])
    outs, cache = [], []
    with torch.no_grad():
        for b in range(3):
            out, kv = dit(x[:, :, 2 * b : 2 * b + 2], t, ctx, cache=cache, return_kv=True)
            outs.append(out)
            cache.append(kv)
    assert max_err(torch.cat(outs, dim=2), fx["out.block_causal_fpb2"]) <= TOL


def test_self_forcing_rollout_matches_every_step(external):
    dit, _, _, _ = external
    roll, meta = load_fixture("wan_dit_tiny_causal_rollout.safetensors")
    ctx = dit.encode_context(roll["in.context"])
    cache, worst = [], 0.0
    with torch.no_grad():
        for b, steps in enumerate(json.loads(meta["schedule"])):
            pos = [2 * b, 2 * b + 1]
            for j in range(len(steps)):
                t = roll[f"block{b}.step{j}.t"]
                out = dit(roll[f"block{b}.step{j}.x"], t, ctx, positions=pos, cache=cache)
                worst = max(worst, max_err(out, roll[f"block{b}.step{j}.out"]))
            cache.append(dit.cache_kv(roll[f"block{b}.context_x"], ctx, positions=pos, cache=cache))
    assert worst <= TOL


def _own(cfg, weights, **kwargs):
    own = CausalWanDiT(cfg, **kwargs)
    own.load_state_dict(weights, strict=True)
    return own.eval().requires_grad_(False)


def test_stream_equals_our_own_dit():
    """An adaptive stream of 4 chunks: the external tree and CausalWanDiT with the same
    weights give the same latents (fp32; the patch embedding is a Conv3d on one side and a
    linear map of patches on the other, so equal to rounding)."""
    cfg, weights = TINY, random_state_dict(TINY, 5)
    own = _own(cfg, weights)
    ext = ExternalWanDiT(comfy_like(cfg, weights), compute_dtype=torch.float32, device="cpu")
    scfg = StreamConfig(height=32, width=48, seed=7)
    cond = torch.randn(1, 5, cfg.text_dim, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (own, ext):
        with torch.no_grad():
            steps = list(stream_chunks(model, init_stream(model, cond, scfg), chunks=4))
        outs.append(torch.cat([s.chunk.content for s in steps], dim=2))
    assert outs[0].shape[2] == 4 * scfg.chunk
    assert max_err(outs[0], outs[1]) < 1e-5


def test_bf16_tree_runs_close_to_fp32():
    """A bf16 tree (ComfyUI's default on a GPU): its layers are fed bf16, ours stay fp32."""
    cfg, weights = TINY, random_state_dict(TINY, 2)
    ref = ExternalWanDiT(comfy_like(cfg, weights), compute_dtype=torch.float32, device="cpu")
    low = ExternalWanDiT(
        comfy_like(cfg, weights, torch.bfloat16), compute_dtype=torch.bfloat16, device="cpu"
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)
    ctx = torch.randn(1, 5, cfg.text_dim, generator=g)
    with torch.no_grad():
        a, b = ref(x, 500.0, ctx), low(x, 500.0, ctx)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).norm() / a.norm() < 0.05


def test_fingerprint_follows_the_effective_weights():
    cfg, weights = TINY, random_state_dict(TINY, 3)
    tree = comfy_like(cfg, weights)
    version = [0]
    dit = ExternalWanDiT(
        tree, compute_dtype=torch.float32, device="cpu", identity=lambda: version[0]
    )
    first = dit.fingerprint()
    other = ExternalWanDiT(comfy_like(cfg, weights), compute_dtype=torch.float32, device="cpu")
    assert other.fingerprint() == first  # same layers, same id
    with torch.no_grad():
        tree.blocks[1].ffn[2].weight.mul_(1.01)  # e.g. a LoRA merged in place
    assert dit.fingerprint() == first  # memoised: the host has not said anything changed
    version[0] += 1
    assert dit.fingerprint() != first
    with torch.no_grad():
        tree.blocks[0].modulation.add_(0.5)
    version[0] += 1
    assert dit.fingerprint() != first


def test_fingerprint_without_a_host_identity_follows_in_place_changes():
    cfg, weights = TINY, random_state_dict(TINY, 3)
    tree = comfy_like(cfg, weights)
    dit = ExternalWanDiT(tree, compute_dtype=torch.float32, device="cpu")
    first = dit.fingerprint()
    assert dit.fingerprint() == first
    with torch.no_grad():
        tree.time_embedding[0].bias.add_(0.1)
    assert dit.fingerprint() != first


def test_a_layer_is_called_not_read():
    """Layers that only work when called (their .weight is not a usable matrix, as with GGUF
    bytes or low-VRAM weights cast inside the call) still give the reference numbers."""

    class Packed(nn.Module):
        def __init__(self, linear: nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.weight = nn.Parameter(linear.weight.detach().flatten().clone())  # "bytes"
            self.bias = nn.Parameter(linear.bias.detach().clone())

        def forward(self, x):
            w = self.weight.reshape(self.out_features, self.in_features)
            return nn.functional.linear(x, w.to(x.dtype), self.bias.to(x.dtype))

    cfg, weights = TINY, random_state_dict(TINY, 4)
    tree = comfy_like(cfg, weights)
    for blk in tree.blocks:
        for attn in (blk.self_attn, blk.cross_attn):
            for name in "qkvo":
                setattr(attn, name, Packed(getattr(attn, name)))
    ext = ExternalWanDiT(tree, compute_dtype=torch.float32, device="cpu", config=cfg)
    own = _own(cfg, weights)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 6, generator=g)
    ctx = torch.randn(1, 5, cfg.text_dim, generator=g)
    with torch.no_grad():
        assert max_err(ext(x, 700.0, ctx), own(x, 700.0, ctx)) < 1e-5


def test_interrupt_inside_a_layer_propagates():
    """A host's Cancel raised inside a layer call (ComfyUI checks it in every op) leaves the
    call as that exception, like a Cancel between steps."""

    class Cancelled(Exception):
        pass

    cfg, weights = TINY, random_state_dict(TINY, 4)
    tree = comfy_like(cfg, weights)

    def cancel(*_):
        raise Cancelled()

    tree.blocks[1].ffn[0].register_forward_pre_hook(cancel)
    ext = ExternalWanDiT(tree, compute_dtype=torch.float32, device="cpu")
    with pytest.raises(Cancelled), torch.no_grad():
        ext(torch.randn(1, 16, 1, 4, 6), 100.0, torch.randn(1, 5, cfg.text_dim))


def _with_param(name: str) -> nn.Module:
    module = nn.Module()
    module.register_parameter(name, nn.Parameter(torch.zeros(1)))
    return module


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: setattr(t, "img_emb", _with_param("emb_pos")), "first-last-frame"),
        (lambda t: setattr(t, "img_emb", _with_param("proj")), "image-to-video"),
        (lambda t: setattr(t, "vace_patch_embedding", nn.Linear(2, 2)), "VACE"),
        (lambda t: setattr(t, "patch_embedding", nn.Conv3d(36, t.dim, (1, 2, 2), stride=(1, 2, 2))), "36 input channels"),
        (lambda t: setattr(t, "patch_embedding", nn.Conv3d(48, t.dim, (1, 2, 2), stride=(1, 2, 2))) or setattr(t.head, "head", nn.Linear(t.dim, 48 * 4)), "Wan2.2 TI2V-5B"),
        (lambda t: [setattr(b, "norm3", nn.Identity()) for b in t.blocks], "norm3"),
    ],
)  # fmt: skip
def test_other_models_are_refused(edit, words):
    cfg, weights = TINY, random_state_dict(TINY, 0)
    tree = comfy_like(cfg, weights)
    edit(tree)
    with pytest.raises(CheckpointError, match=words):
        check_t2v_tree(tree)


def test_a_flux_like_tree_is_refused():
    class Flux(nn.Module):
        def __init__(self):
            super().__init__()
            self.double_blocks = nn.ModuleList([nn.Linear(4, 4)])

    with pytest.raises(CheckpointError, match="Flux"):
        check_t2v_tree(Flux())
