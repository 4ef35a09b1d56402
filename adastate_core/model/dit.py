"""CausalWanDiT: the Wan2.1 text-to-video DiT, driven by externally supplied K/V caches.

The math is the official Wan2.1 `WanModel` (REFERENCE.md §1); what is added is the interface a
streaming sampler needs:

* per-frame timesteps `t: [B, F]` (each latent frame gets its own modulation);
* self-attention of the live tokens over cached K/V segments. Cached keys are handed in
  *without* RoPE together with their temporal positions, so a sampler can re-index a sliding
  window with block-relative positions; RoPE angles are built in float64 for any position;
* the live frames' un-roped K/V returned for caching;
* prompt cross-attention K/V computed once (`encode_context`) and reused.

With no cache, `model(x, t, context)` is exactly the official full-attention forward.

Precision policy: linears and attention run in `compute_dtype`; the residual stream, time
embedding, modulation, norms and head run in `precise_dtype` (fp32, as the official code does).
Linear weights may be *stored* lower (bf16/fp16/fp8) and are cast per layer when used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..tensor_utils import tensor_version
from .attention import AttentionFn, get_backend, sdpa, token_mask
from .config import WanConfig
from .rope import RopeTable, rope_angles

# ----------------------------------------------------------------------------------------------
# data passed in and out


@dataclass(frozen=True)
class KVSegment:
    """Un-roped self-attention keys and values of consecutive latent frames, for all layers.

    k, v: [num_layers, B, F, N, dim] (N tokens per frame). positions: [F] temporal RoPE
    positions these frames take in the window they are read in (float64).
    """

    k: Tensor
    v: Tensor
    positions: Tensor

    @property
    def num_frames(self) -> int:
        return self.k.shape[2]

    def at(self, positions: Sequence[float] | Tensor) -> KVSegment:
        """The same K/V placed at other temporal positions (no copy). Positions live on the
        host (they only select a RoPE table), so placing a segment never syncs a GPU."""
        pos = torch.as_tensor(positions, dtype=torch.float64).reshape(-1).cpu()
        if pos.numel() != self.num_frames:
            raise ValueError(f"{pos.numel()} positions for {self.num_frames} frames")
        return KVSegment(self.k, self.v, pos)

    def frames(self, start: int, stop: int) -> KVSegment:
        """Frames [start, stop) of this segment (views, no copy)."""
        return KVSegment(
            self.k[:, :, start:stop], self.v[:, :, start:stop], self.positions[start:stop]
        )


@dataclass(frozen=True)
class CrossKV:
    """Cross-attention keys/values of one prompt for every layer: k, v [num_layers, B, text_len, dim]."""

    k: Tensor
    v: Tensor


# ----------------------------------------------------------------------------------------------
# layers


class Linear(nn.Linear):
    """A linear layer whose weight may be stored in low precision (bf16/fp16/fp8) and is cast to
    the input's dtype when used. `scale_weight` (ComfyUI scaled fp8) multiplies the weight."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("scale_weight", None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, cast_weight(self, x.dtype), cast_or_none(self.bias, x.dtype))


class PatchEmbed(nn.Module):
    """Conv3d with stride = kernel = patch, computed as a linear map of flattened patches.
    weight: [dim, C, pt, ph, pw] (the official Conv3d layout), bias: [dim]."""

    def __init__(self, in_dim: int, dim: int, patch: tuple[int, int, int]):
        super().__init__()
        self.patch = patch
        self.weight = nn.Parameter(torch.empty(dim, in_dim, *patch))
        self.bias = nn.Parameter(torch.empty(dim))
        self.register_buffer("scale_weight", None, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, C, F, H, W] -> tokens [B, f*h*w, dim] in (f, h, w) order."""
        b, c, n_f, n_h, n_w = x.shape
        pt, ph, pw = self.patch
        patches = x.reshape(b, c, n_f // pt, pt, n_h // ph, ph, n_w // pw, pw)
        patches = patches.permute(0, 2, 4, 6, 1, 3, 5, 7).flatten(4).flatten(1, 3)
        weight = cast_weight(self, x.dtype).flatten(1)
        return F.linear(patches, weight, self.bias.to(x.dtype))


def cast_weight(module: nn.Module, dtype: torch.dtype) -> Tensor:
    weight = module.weight.to(dtype)
    if module.scale_weight is not None:
        weight = weight * module.scale_weight.to(dtype)
    return weight


def _cat_frames(parts: list[Tensor]) -> Tensor:
    """Concatenate along frames (dim 1); a single part is returned as is (no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def cast_or_none(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(dtype)


def layer_norm(x: Tensor, eps: float) -> Tensor:
    """LayerNorm without affine, in fp32 (returns x's dtype only if x is fp32 or wider)."""
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps)


class RMSNorm(nn.Module):
    """RMS norm over the whole model width (Wan's q/k norm), computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), x.shape[-1:], self.weight.float(), self.eps)


class AffineLayerNorm(nn.LayerNorm):
    """LayerNorm with affine (`norm3`), computed in fp32."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )


# ----------------------------------------------------------------------------------------------
# the layer seam: the block math over any module tree with the official Wan layer names


def _own_param(p: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    return p.to(dtype)


@dataclass(frozen=True)
class LayerSeam:
    """How the DiT math reaches the layers of a module tree with the official Wan2.1 names
    (`patch_embedding`, `blocks.i.self_attn.q`, ...), so one forward runs over our own layers
    and over another program's (e.g. ComfyUI's WanModel, with its LoRA patches, low-VRAM
    casting or GGUF dequantisation inside its modules). Layers are only ever called, never
    read; what differs is the dtype each kind of layer is fed:

    * q/k/v/o, FFN and text linears always get the compute dtype;
    * `norm_dtype`: what `norm3` gets (None: the fp32 residual stream as is; our own norm
      computes in fp32 whatever it is fed);
    * `time_dtype` / `head_dtype`: what the time MLPs / the head get (None: the precise dtype);
    * `param(p, dtype, device)`: a bare Parameter (the modulations) in that dtype and device;
    * `patch(module, x, dtype)`: the patch embedding, latent [B, C, F, H, W] -> tokens
      [B, f*h*w, dim].
    """

    norm_dtype: torch.dtype | None = None
    time_dtype: torch.dtype | None = None
    head_dtype: torch.dtype | None = None
    param: Callable[[Tensor, torch.dtype, torch.device], Tensor] = _own_param
    patch: Callable[[nn.Module, Tensor, torch.dtype], Tensor] | None = None

    def norm(self, module: nn.Module, x: Tensor) -> Tensor:
        return module(x if self.norm_dtype is None else x.to(self.norm_dtype))

    def embed(self, module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
        if self.patch is None:
            return module(x.to(dtype))
        return self.patch(module, x, dtype)


OWN_LAYERS = LayerSeam()


def live_kv(attn: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Un-roped keys (after norm_k) and values of x: [B, L, dim] -> 2 x [B, L, dim]."""
    return attn.norm_k(attn.k(x)).to(x.dtype), attn.v(x)


def self_attention(
    attn: nn.Module,
    x: Tensor,
    k_live: Tensor,
    v_live: Tensor,
    cached: Sequence[tuple[Tensor, Tensor]],
    rope: RopeTable,
    attend: AttentionFn,
    frame_mask: Tensor | None = None,
    probe=None,
) -> Tensor:
    """x: [B, F*N, dim] live tokens (compute dtype); k_live/v_live from `live_kv`; cached:
    per segment (k, v) [B, F_s, N, dim]; rope covers cached frames then live frames."""
    b, n_live, d = x.shape
    h = attn.num_heads
    f_live = rope.num_frames - sum(k.shape[1] for k, _ in cached)
    n_tok = n_live // f_live
    q = attn.norm_q(attn.q(x)).reshape(b, f_live, n_tok, h, d // h)
    q = rope.frames(rope.num_frames - f_live, rope.num_frames).apply(q, x.dtype)
    k_all = _cat_frames([k for k, _ in cached] + [k_live.reshape(b, f_live, n_tok, d)])
    v_all = _cat_frames([v for _, v in cached] + [v_live.reshape(b, f_live, n_tok, d)])
    k_all = rope.apply(k_all.unflatten(-1, (h, d // h)), x.dtype)
    q, k_all, v_all = q.flatten(1, 2), k_all.flatten(1, 2), v_all.flatten(1, 2)
    if probe is not None:  # analysis hook: roped queries/keys [B, L, H, d] of this layer
        probe(q, k_all)
    if frame_mask is None:
        out = attend(q, k_all, v_all.unflatten(-1, (h, -1)))
    else:
        out = sdpa(q, k_all, v_all.unflatten(-1, (h, -1)), token_mask(frame_mask, n_tok))
    return attn.o(out.flatten(2).to(x.dtype))


def context_kv(attn: nn.Module, context: Tensor) -> tuple[Tensor, Tensor]:
    """context: [B, text_len, dim] embedded text -> (k, v) [B, text_len, dim]."""
    return attn.norm_k(attn.k(context)).to(context.dtype), attn.v(context)


def cross_attention(attn: nn.Module, x: Tensor, k: Tensor, v: Tensor, attend: AttentionFn):
    h = attn.num_heads
    q = attn.norm_q(attn.q(x)).to(x.dtype).unflatten(-1, (h, -1))
    out = attend(q, k.unflatten(-1, (h, -1)), v.unflatten(-1, (h, -1)))
    return attn.o(out.flatten(2).to(x.dtype))


def modulate(x: Tensor, shift: Tensor, scale: Tensor, dtype: torch.dtype, eps: float) -> Tensor:
    """LN(x)*(1+scale)+shift per frame. x: [B, F*N, dim]; shift/scale: [B, F, 1, dim]."""
    b, _, d = x.shape
    y = layer_norm(x, eps).reshape(b, shift.shape[1], -1, d)
    return torch.addcmul(shift, y, 1 + scale).reshape(b, -1, d).to(dtype)


def gated(x: Tensor, y: Tensor, gate: Tensor) -> Tensor:
    """x + y*gate per frame, in x's (precise) dtype."""
    b, _, d = x.shape
    y = y.to(x.dtype).reshape(b, gate.shape[1], -1, d)
    return torch.addcmul(x.reshape(b, gate.shape[1], -1, d), y, gate).reshape(b, -1, d)


def block_step(
    blk: nn.Module,
    seam: LayerSeam,
    eps: float,
    tokens: Tensor,
    e0: Tensor,
    compute_dtype: torch.dtype,
    rope: RopeTable | None = None,
    cross_k: Tensor | None = None,
    cross_v: Tensor | None = None,
    cached: Sequence[tuple[Tensor, Tensor]] = (),
    attend: AttentionFn | None = None,
    mask: Tensor | None = None,
    probe=None,
    full: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """One transformer block of the tree `blk` (official layer names). tokens: [B, F*N, dim]
    residual stream (precise dtype); e0: [B, F, 6, 1, dim] time projection. Returns (tokens,
    k_live, v_live); with `full=False` only the live K/V are computed (the cache-write pass
    skips the rest of the last block)."""
    cdt = compute_dtype
    modulation = seam.param(blk.modulation, tokens.dtype, tokens.device)
    mod = (modulation[:, None, :, None, :] + e0).unbind(2)
    y = modulate(tokens, mod[0], mod[1], cdt, eps)
    k_live, v_live = live_kv(blk.self_attn, y)
    if not full:
        return tokens, k_live, v_live
    y = self_attention(blk.self_attn, y, k_live, v_live, cached, rope, attend, mask, probe)
    tokens = gated(tokens, y, mod[2])
    y = cross_attention(
        blk.cross_attn, seam.norm(blk.norm3, tokens).to(cdt), cross_k, cross_v, attend
    )
    tokens = tokens + y.to(tokens.dtype)
    y = blk.ffn(modulate(tokens, mod[3], mod[4], cdt, eps))
    tokens = gated(tokens, y, mod[5])
    return tokens, k_live, v_live


class SelfAttention(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.num_heads = cfg.num_heads
        self.q, self.k, self.v, self.o = (Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps)
        self.norm_k = RMSNorm(d, cfg.eps)

    def live_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return live_kv(self, x)

    forward = self_attention


class CrossAttention(nn.Module):
    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.num_heads = cfg.num_heads
        self.q, self.k, self.v, self.o = (Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps)
        self.norm_k = RMSNorm(d, cfg.eps)

    def context_kv(self, context: Tensor) -> tuple[Tensor, Tensor]:
        return context_kv(self, context)

    forward = cross_attention


class Block(nn.Module):
    """Our own block: its layers, with `block_step` as its forward (a module, so activation
    checkpointing, torch.compile and FSDP can wrap it)."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        self.eps = cfg.eps
        self.self_attn = SelfAttention(cfg)
        self.norm3 = AffineLayerNorm(cfg.dim, eps=cfg.eps)
        self.cross_attn = CrossAttention(cfg)
        self.ffn = nn.Sequential(
            Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), Linear(cfg.ffn_dim, cfg.dim)
        )
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim))

    def forward(self, tokens: Tensor, e0: Tensor, *args, **kwargs):
        return block_step(self, OWN_LAYERS, self.eps, tokens, e0, *args, **kwargs)


# ----------------------------------------------------------------------------------------------
# the model


class WanStreamForward:
    """The streaming DiT math (prompt K/V, the forward over live frames and cached K/V, the
    cache-write pass), over the module tree `self.layers` reached through `self.seam`. A
    subclass provides: `config`, `compute_dtype`, `precise_dtype`, `device`, `layers`, `seam`,
    `_attend`, `gradient_checkpointing`, and `_block(blk)` (the callable that runs block
    `blk`: the module itself for our own blocks)."""

    seam: LayerSeam = OWN_LAYERS
    gradient_checkpointing: bool = False

    def _block(self, blk: nn.Module):
        return blk

    # -- prompt ----------------------------------------------------------------------------------

    def encode_context(self, context: Tensor) -> CrossKV:
        """context: [B, L, text_dim] text-encoder rows (L <= text_len real rows; zero-padded here
        to text_len as the official code does) -> per-layer cross-attention K/V."""
        return self._encode_context(context)

    def _encode_context(self, context: Tensor) -> CrossKV:
        # the body of `encode_context`, called from inside `forward` (a wrapper such as FSDP
        # may hook the public method; a nested call must not re-enter the hook)
        cfg = self.config
        if context.ndim != 3 or context.shape[-1] != cfg.text_dim:
            raise ValueError(
                f"text conditioning must be [batch, tokens, {cfg.text_dim}] (umT5-XXL rows for "
                f"Wan), got {list(context.shape)}"
            )
        if context.shape[1] > cfg.text_len:
            raise ValueError(
                f"text conditioning has {context.shape[1]} rows; the model takes at most "
                f"{cfg.text_len} (trim trailing padding rows)"
            )
        dtype = self.compute_dtype
        padded = F.pad(context.to(dtype), (0, 0, 0, cfg.text_len - context.shape[1]))
        net = self.layers
        emb = net.text_embedding(padded)
        ks, vs = zip(*(context_kv(blk.cross_attn, emb) for blk in net.blocks))
        return CrossKV(torch.stack(ks), torch.stack(vs))

    # -- forward ---------------------------------------------------------------------------------

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        context: Tensor | CrossKV,
        *,
        positions: Sequence[float] | Tensor | None = None,
        cache: Sequence[KVSegment] = (),
        return_kv: bool = False,
        attn_mask: Tensor | None = None,
        probe=None,
    ) -> Tensor | tuple[Tensor, KVSegment]:
        """Predict the flow velocity (noise - x0) of the live frames.

        x: [B, 16, F, H, W] normalised latent of the live frames.
        t: timestep(s) in [0, 1000]: scalar, [B] or per frame [B, F].
        context: [B, L, text_dim] text rows, or `encode_context(...)` output.
        positions: [F] temporal RoPE positions of the live frames (default: right after the
            cached frames, i.e. n_cached .. n_cached+F-1).
        cache: K/V segments the live tokens attend to besides themselves.
        return_kv: also return the live frames' un-roped K/V as a `KVSegment`.
        attn_mask: optional frame-level boolean mask [F, F_keys] (True = may attend), keys
            ordered as the cache segments then the live frames; e.g. a block-causal mask for
            a whole sequence in one call. Masked calls use SDPA.
        probe: optional callable(layer, q, k) receiving every layer's roped self-attention
            queries [B, L, H, d] and keys [B, L_keys, H, d] (keys ordered as `attn_mask`), for
            attention analysis; it must not modify them.
        Returns velocity [B, 16, F, H, W] (precise dtype), and the segment if asked.
        """
        out, kv = self._run(
            x,
            t,
            context,
            positions,
            cache,
            want_output=True,
            want_kv=return_kv,
            mask=attn_mask,
            probe=probe,
        )
        return (out, kv) if return_kv else out

    def cache_kv(
        self,
        x: Tensor,
        context: Tensor | CrossKV,
        *,
        t: Tensor | float = 0.0,
        positions: Sequence[float] | Tensor | None = None,
        cache: Sequence[KVSegment] = (),
    ) -> KVSegment:
        """The live frames' K/V only (the cache-write pass at t = 0); the head and the last
        block's attention and FFN, whose results nobody reads, are skipped."""
        return self._run(x, t, context, positions, cache, want_output=False, want_kv=True)[1]

    def _run(self, x, t, context, positions, cache, *, want_output, want_kv, mask=None, probe=None):
        cfg = self.config
        net, seam = self.layers, self.seam
        cdt, pdt = self.compute_dtype, self.precise_dtype
        b, grid = self._check_input(x)
        x = x.to(self.device)  # inputs and caches may live elsewhere (e.g. offloaded by a host)
        f, h, w = grid
        n_tok = h * w
        n_cached = sum(seg.num_frames for seg in cache)
        for seg in cache:
            self._check_segment(seg, b, n_tok)

        live_pos = (
            torch.arange(n_cached, n_cached + f, dtype=torch.float64)
            if positions is None
            else torch.as_tensor(positions, dtype=torch.float64).reshape(-1).cpu()
        )
        if live_pos.numel() != f:
            raise ValueError(f"{live_pos.numel()} positions given for {f} live frames")
        if mask is not None and tuple(mask.shape) != (f, n_cached + f):
            raise ValueError(
                f"attn_mask must be [live frames, cached + live frames] = [{f}, {n_cached + f}], "
                f"got {list(mask.shape)}"
            )
        all_pos = torch.cat([seg.positions.cpu() for seg in cache] + [live_pos])
        rope = self._rope_table(all_pos, h, w, x.device)

        tt = self._frame_timesteps(t, b, x.shape[2], x.device)[:, :: cfg.patch_size[0]]
        sinusoid = timestep_sinusoid(tt.reshape(-1), cfg.freq_dim).to(seam.time_dtype or pdt)
        e = net.time_embedding(sinusoid)  # [B*f, dim]
        e0 = net.time_projection(e).reshape(b, f, 6, 1, cfg.dim)
        e = e.reshape(b, f, 1, cfg.dim)

        cross = context if isinstance(context, CrossKV) else self._encode_context(context)
        if cross.k.shape[1] not in (1, b):
            raise ValueError(f"prompt batch {cross.k.shape[1]} does not match latent batch {b}")
        cross_k = cross.k.to(x.device, cdt).expand(-1, b, -1, -1)
        cross_v = cross.v.to(x.device, cdt).expand(-1, b, -1, -1)

        tokens = seam.embed(net.patch_embedding, x, cdt).to(pdt)
        kv_shape = (cfg.num_layers, b, f, n_tok, cfg.dim)
        k_out = tokens.new_empty(kv_shape, dtype=cdt) if want_kv else None
        v_out = tokens.new_empty(kv_shape, dtype=cdt) if want_kv else None

        last = len(net.blocks) - 1
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        for i, blk in enumerate(net.blocks):
            blk = self._block(blk)
            full = want_output or i < last
            cached = (
                [(seg.k[i].to(x.device, cdt), seg.v[i].to(x.device, cdt)) for seg in cache]
                if full
                else []
            )
            layer_probe = None if probe is None else (lambda q, k, i=i: probe(i, q, k))
            args = (tokens, e0, cdt, rope, cross_k[i], cross_v[i], cached, self._attend, mask)
            if checkpointing:  # training: keep only block inputs, recompute in backward
                tokens, k_live, v_live = checkpoint(
                    blk, *args, layer_probe, full, use_reentrant=False
                )
            else:
                tokens, k_live, v_live = blk(*args, layer_probe, full)
            if want_kv:
                k_out[i] = k_live.reshape(b, f, n_tok, cfg.dim)
                v_out[i] = v_live.reshape(b, f, n_tok, cfg.dim)

        kv = KVSegment(k_out, v_out, live_pos) if want_kv else None
        if not want_output:
            return None, kv
        head_mod = seam.param(net.head.modulation, pdt, x.device).reshape(1, 1, 2, cfg.dim) + e
        shift, scale = head_mod[:, :, 0:1], head_mod[:, :, 1:2]
        y = layer_norm(tokens, cfg.eps).reshape(b, f, n_tok, cfg.dim) * (1 + scale) + shift
        y = net.head.head(y.to(seam.head_dtype or pdt)).to(pdt)
        return self._unpatchify(y, grid), kv

    # -- helpers ---------------------------------------------------------------------------------

    def _rope_table(self, positions: Tensor, h: int, w: int, device) -> RopeTable:
        """The RoPE rotations of these (host) frame positions on `device`, memoised: a stream
        reads the same few windows over and over (every steady chunk has the same positions),
        so the table is built and copied to the device once, not in every call."""
        key = (tuple(positions.tolist()), h, w, str(device))
        memo = self.__dict__.setdefault("_rope_memo", {})
        table = memo.pop(key, None)
        if table is None:
            angles = rope_angles(positions.to(torch.float64), h, w, self.config.rope_split)
            table = RopeTable(angles.to(device))
        memo[key] = table  # most recent last
        while len(memo) > 8:
            memo.pop(next(iter(memo)))
        return table

    def _check_input(self, x: Tensor) -> tuple[int, tuple[int, int, int]]:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(
                f"latent must be [batch, {cfg.in_dim}, frames, height, width], got {list(x.shape)}"
            )
        dims = x.shape[2:]
        if any(s % p for s, p in zip(dims, cfg.patch_size)):
            raise ValueError(
                f"latent frames/height/width {tuple(dims)} must be multiples of the patch "
                f"{cfg.patch_size} (video height and width multiples of 16)"
            )
        return x.shape[0], tuple(s // p for s, p in zip(dims, cfg.patch_size))  # type: ignore[return-value]

    def _check_segment(self, seg: KVSegment, batch: int, n_tok: int) -> None:
        cfg = self.config
        want = (cfg.num_layers, batch, seg.num_frames, n_tok, cfg.dim)
        if tuple(seg.k.shape) != want or tuple(seg.v.shape) != want:
            raise ValueError(
                f"cached K/V has shape {list(seg.k.shape)}, expected {list(want)} "
                "[layers, batch, frames, tokens per frame, dim]: it was made at another "
                "resolution, batch size or by another model"
            )
        if seg.positions.numel() != seg.num_frames:
            raise ValueError(
                f"cached K/V of {seg.num_frames} frames carries {seg.positions.numel()} positions"
            )

    @staticmethod
    def _frame_timesteps(t: Tensor | float, batch: int, frames: int, device) -> Tensor:
        tt = (
            t.to(device)
            if isinstance(t, Tensor)
            else torch.full((), float(t), dtype=torch.float64, device=device)  # no H2D copy
        )
        if tt.ndim == 0:
            tt = tt.reshape(1, 1)
        elif tt.ndim == 1:
            tt = tt[:, None]
        if tt.ndim != 2 or tt.shape[0] not in (1, batch) or tt.shape[1] not in (1, frames):
            raise ValueError(
                f"timestep must be a scalar, [batch] or [batch, frames] = [{batch}, {frames}], "
                f"got shape {list(torch.as_tensor(t).shape)}"
            )
        return tt.expand(batch, frames)

    def _unpatchify(self, y: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """y: [B, f, h*w, pt*ph*pw*c] (c fastest) -> [B, c, f*pt, h*ph, w*pw]."""
        cfg = self.config
        f, h, w = grid
        pt, ph, pw = cfg.patch_size
        y = y.reshape(y.shape[0], f, h, w, pt, ph, pw, cfg.out_dim)
        y = y.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return y.reshape(y.shape[0], cfg.out_dim, f * pt, h * ph, w * pw)


class CausalWanDiT(WanStreamForward, nn.Module):
    """Wan2.1 DiT with per-frame timesteps and external, un-roped K/V caches.

    Parameter names are the official ones, so `state_dict()` is a canonical checkpoint.
    """

    def __init__(
        self,
        config: WanConfig,
        *,
        compute_dtype: torch.dtype = torch.float32,
        precise_dtype: torch.dtype = torch.float32,
        attention: str = "sdpa",
    ):
        super().__init__()
        self.config = cfg = config
        self.compute_dtype = compute_dtype
        self.precise_dtype = precise_dtype
        # per-block activation checkpointing of grad-enabled calls (training; off at inference)
        self.gradient_checkpointing = False
        self.set_attention(attention)
        d = cfg.dim
        self.patch_embedding = PatchEmbed(cfg.in_dim, d, cfg.patch_size)
        self.text_embedding = nn.Sequential(
            Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), Linear(d, d)
        )
        self.time_embedding = nn.Sequential(Linear(cfg.freq_dim, d), nn.SiLU(), Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), Linear(d, 6 * d))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = nn.Module()
        self.head.head = Linear(d, cfg.patch_channels)
        self.head.modulation = nn.Parameter(torch.empty(1, 2, d))

    def compile_blocks(self, **options) -> CausalWanDiT:
        """Opt-in fast mode: `torch.compile` each transformer block (fuses the norms, adaLN,
        gated residuals and GELU around the GEMMs). Numbers change by rounding (measured on
        the tiny CPU model: 1e-6 max abs in fp32); the first call of each shape compiles
        (a steady stream has 3 shapes). `options` go to `torch.compile`."""
        options.setdefault("dynamic", False)
        for blk in self.blocks:
            if not getattr(blk, "_adastate_compiled", False):
                blk.forward = torch.compile(blk.forward, **options)
                blk._adastate_compiled = True
        return self

    def set_attention(self, name: str) -> None:
        """Choose the attention backend ("sdpa", "cudnn" or "sageattention")."""
        self.attention = name
        self._attend = get_backend(name)

    def fingerprint(self) -> str:
        """A short id of the architecture and the (effective) weights, independent of the
        storage dtype up to bf16 rounding: a stream's cache is only valid for the model that
        made it. Hashes the first 256 values of every tensor, rounded to bf16; memoised until
        a parameter is replaced or modified in place."""
        key = tuple((p.data_ptr(), tensor_version(p)) for p in self.parameters())
        memo = self.__dict__.get("_fingerprint_memo")
        if memo is None or memo[0] != key:
            memo = (key, self._compute_fingerprint())
            self.__dict__["_fingerprint_memo"] = memo
        return memo[1]

    def _compute_fingerprint(self) -> str:
        digest = hashlib.sha256(repr(self.config).encode())
        modules = dict(self.named_modules())
        for name, param in sorted(self.named_parameters()):
            owner = modules[name.rsplit(".", 1)[0]] if "." in name else self
            flat = param.detach().flatten()[:256].float()
            scale = getattr(owner, "scale_weight", None) if name.endswith(".weight") else None
            if scale is not None:
                flat = flat * scale.float()
            digest.update(name.encode())
            digest.update(flat.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
        return digest.hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return self.head.modulation.device

    @property
    def layers(self) -> CausalWanDiT:
        return self


def timestep_sinusoid(t: Tensor, dim: int) -> Tensor:
    """[cos, sin] embedding of t with dim/2 frequencies 10000^(-i/(dim/2)), in float64."""
    half = dim // 2
    t = t.to(torch.float64)
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
