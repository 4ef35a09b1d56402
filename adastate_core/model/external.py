"""The stream's DiT over a Wan2.1 module tree owned by another program (ComfyUI's `WanModel`
or `CausalWanModel`, after its loaders, LoRA patches, low-VRAM casting or GGUF layers).

The math is `WanStreamForward`, the same code our own `CausalWanDiT` runs; only the layers are
someone else's. They are called, never read: a GGUF layer's `.weight` is quantised bytes, a
low-VRAM layer's lives on the CPU and a LoRA may be applied inside the call, and calling the
module gets each right. What is ours: the float64 timestep sinusoid and RoPE angles, un-roped
K/V segments at any positions, the fp32 residual stream, modulation and affine-free layer
norms, the prompt's cross-attention K/V computed once, and attention over cache + live.

Dtypes: every layer is fed `compute_dtype` (the dtype the host computes the model in; its
layers cast their weights to the input, or hold them in that dtype), except the patch
embedding, fed `patch_dtype` (ComfyUI keeps it fp32 and feeds it fp32). So in fp32 the
result is the official forward (tests/test_external_dit.py: 9.5e-7 on every fixture); in
bf16 the time MLPs, q/k norms, norm3 and the head run in bf16, as in ComfyUI's own Wan,
where our own DiT runs them in fp32.

No ComfyUI import here: the host's specifics come in as callables (`param`, `attention`,
`identity`); nodes/bridge.py supplies ComfyUI's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from ..tensor_utils import tensor_version
from . import formats
from .attention import AttentionFn, get_backend
from .config import WanConfig
from .dit import LayerSeam, WanStreamForward, block_step

# the official names a Wan2.1 T2V tree must have (beyond blocks.i.*)
REQUIRED = (
    "patch_embedding",
    "text_embedding",
    "time_embedding",
    "time_projection",
    "blocks",
    "head",
)


def _conv_patch(module: nn.Module, x: Tensor, dtype: torch.dtype, *, feed: torch.dtype):
    """A Conv3d patch embedding (stride = kernel) -> tokens [B, f*h*w, dim] in (f, h, w)
    order, as the official code flattens them."""
    return module(x.to(feed)).flatten(2).transpose(1, 2)


def _move_param(p: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    return p.to(device=device, dtype=dtype)


def tree_shapes(layers: nn.Module) -> dict[str, tuple[int, ...]]:
    """name -> logical shape of every parameter and buffer, without reading any values (a
    quantised tensor reports its logical shape as `tensor_shape`)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, t in [*layers.named_parameters(), *layers.named_buffers()]:
        out[name] = tuple(int(s) for s in getattr(t, "tensor_shape", t.shape))
    return out


def check_t2v_tree(
    layers: nn.Module, *, num_heads: int | None = None, text_len: int | None = None
) -> WanConfig:
    """The WanConfig of a Wan2.1 text-to-video module tree, or a CheckpointError saying what
    the tree is instead (the same messages as our file loader gives for such files)."""
    shapes = tree_shapes(layers)
    names = set(shapes)
    foreign = formats.identify_foreign(names)
    if foreign:
        raise CheckpointError(f"the connected model is {foreign}")
    variant = formats.identify_wan_variant(shapes)
    if variant:
        raise CheckpointError(f"the connected model is {variant}")
    missing = [n for n in REQUIRED if not hasattr(layers, n)]
    if missing:
        raise CheckpointError(
            "the connected model is not a Wan2.1 DiT (it has no "
            + ", ".join(missing)
            + "). AdaState needs a Wan2.1 text-to-video model: "
            + formats.WAN_T2V_FILE
        )
    norm3 = "blocks.0.norm3.weight"
    if norm3 not in shapes:
        raise CheckpointError(
            "the connected Wan model has no cross-attention norm (norm3): it is not a Wan2.1 "
            "text-to-video DiT. AdaState needs " + formats.WAN_T2V_FILE
        )
    heads = num_heads or getattr(layers, "num_heads", None)
    config = WanConfig.from_shapes(
        shapes,
        num_heads=int(heads) if heads else None,
        text_len=int(text_len or getattr(layers, "text_len", 512)),
        eps=float(getattr(layers, "eps", 1e-6)),
    )
    if config.patch_size != (1, 2, 2) or config.in_dim != 16 or config.out_dim != 16:
        raise CheckpointError(
            f"the connected Wan model has patch {config.patch_size} and {config.in_dim} -> "
            f"{config.out_dim} latent channels; AdaState runs Wan2.1 T2V (patch (1, 2, 2), 16 "
            f"channels): {formats.WAN_T2V_FILE}"
        )
    return config


class ExternalWanDiT(WanStreamForward):
    """A causal stream's DiT whose layers are another program's Wan2.1 modules.

    layers: the tree with the official names (e.g. ComfyUI's `model.diffusion_model`).
    compute_dtype: what its layers are fed (ComfyUI: `manual_cast_dtype or get_dtype()`).
    device: where the stream runs (ComfyUI: the patcher's load device).
    param(p, dtype, device): a bare Parameter (modulations) cast and moved (ComfyUI:
        `comfy.model_management.cast_to`); default `p.to(device, dtype)`.
    attention: a backend name ("sdpa", "cudnn", "sageattention") or a function
        (q, k, v [B, L, H, d]) -> [B, L, H, d] (e.g. the host's own attention).
    identity(): a hashable that changes whenever the layers' effective weights may have
        changed (ComfyUI: the model object and its patch set); keys the fingerprint memo.
        Default: the storage and version counter of every parameter (changes when a
        parameter is replaced or modified in place, as our own DiT's memo).
    """

    def __init__(
        self,
        layers: nn.Module,
        *,
        compute_dtype: torch.dtype,
        device: torch.device | str,
        config: WanConfig | None = None,
        param: Callable[[Tensor, torch.dtype, torch.device], Tensor] | None = None,
        patch_dtype: torch.dtype = torch.float32,
        attention: str | AttentionFn = "sdpa",
        identity: Callable[[], Hashable] | None = None,
    ):
        self.layers = layers
        self.config = config or check_t2v_tree(layers)
        self.compute_dtype = compute_dtype
        self.precise_dtype = torch.float32
        self._device = torch.device(device)
        self.patch_dtype = patch_dtype
        self.seam = LayerSeam(
            norm_dtype=compute_dtype,
            time_dtype=compute_dtype,
            head_dtype=compute_dtype,
            param=param or _move_param,
            patch=partial(_conv_patch, feed=patch_dtype),
        )
        self._identity = identity
        self._memo: tuple[Hashable, str] | None = None
        self.set_attention(attention)

    @property
    def device(self) -> torch.device:
        return self._device

    def set_attention(self, attention: str | AttentionFn) -> None:
        if callable(attention):
            self.attention = getattr(attention, "__name__", "custom")
            self._attend = attention
        else:
            self.attention = attention
            self._attend = get_backend(attention)

    def _block(self, blk: nn.Module):
        return partial(block_step, blk, self.seam, self.config.eps)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- identity --------------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A short id of the architecture and the *effective* layers: each layer's output on
        a fixed probe input, rounded to bf16 and hashed, so it sees a LoRA applied at call
        time, a GGUF layer's dequantised weights and low-VRAM weights alike (reading the
        stored tensors would not). Memoised per `identity()`."""
        key = self._identity() if self._identity is not None else self._parameter_versions()
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        value = self._probe_fingerprint()
        self._memo = (key, value)
        return value

    def _parameter_versions(self) -> tuple:
        return tuple((p.data_ptr(), tensor_version(p)) for p in self.layers.parameters())

    @torch.no_grad()
    def _probe_fingerprint(self) -> str:
        digest = hashlib.sha256(repr(self.config).encode())
        dev, cdt = self.device, self.compute_dtype
        for name, module in sorted(self.layers.named_modules(), key=lambda item: item[0]):
            own = [n for n, _ in module.named_parameters(recurse=False)]
            if not own:
                continue
            digest.update(name.encode())
            if name == "patch_embedding":
                c, (pt, ph, pw) = self.config.in_dim, self.config.patch_size
                out = self.seam.embed(module, _probe((1, c, pt, ph, pw), dev, cdt), cdt)
            elif hasattr(module, "in_features"):
                out = module(_probe((1, int(module.in_features)), dev, cdt))
            elif hasattr(module, "normalized_shape"):
                out = module(_probe((1, *module.normalized_shape), dev, cdt))
            else:  # bare parameters of a container (the modulations)
                for pname in sorted(own):
                    p = self.seam.param(getattr(module, pname), torch.float32, dev)
                    digest.update(pname.encode())
                    digest.update(_bf16_bytes(p.flatten()[:256]))
                continue
            digest.update(_bf16_bytes(out))
        return digest.hexdigest()[:16]


def _probe(shape: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
    n = 1
    for s in shape:
        n *= int(s)
    values = torch.sin(torch.arange(n, dtype=torch.float64) * 0.61803 + 0.5)
    return values.reshape(tuple(shape)).to(device=device, dtype=dtype)


def _bf16_bytes(t: Tensor) -> bytes:
    return t.detach().float().to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes()


def describe(config: WanConfig, extra: Mapping[str, object] | None = None) -> str:
    """One line: the size and the host's settings, for node tooltips and errors."""
    parts = [config.size_name()]
    for k, v in (extra or {}).items():
        parts.append(f"{k} {v}")
    return ", ".join(parts)
