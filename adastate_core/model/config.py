"""Wan2.1 DiT hyper-parameters, and reading them back from a checkpoint's tensor shapes."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import CheckpointError

HEAD_DIM = 128  # every released Wan2.1 size uses 128-wide heads


@dataclass(frozen=True)
class WanConfig:
    """Architecture of a Wan2.1 text-to-video DiT (defaults: Wan2.1-T2V-1.3B)."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head dim {self.head_dim} must be even and >= 6 for 3-axis RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Channels of one head given to the (t, h, w) RoPE axes: 44/42/42 for d = 128."""
        d = self.head_dim
        return d - 4 * (d // 6), 2 * (d // 6), 2 * (d // 6)

    @property
    def patch_channels(self) -> int:
        return self.out_dim * self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical (official) key -> shape of every tensor of this architecture."""
        d, f, p = self.dim, self.ffn_dim, self.patch_size
        shapes: dict[str, tuple[int, ...]] = {
            "patch_embedding.weight": (d, self.in_dim, *p),
            "patch_embedding.bias": (d,),
            "text_embedding.0.weight": (d, self.text_dim),
            "text_embedding.0.bias": (d,),
            "text_embedding.2.weight": (d, d),
            "text_embedding.2.bias": (d,),
            "time_embedding.0.weight": (d, self.freq_dim),
            "time_embedding.0.bias": (d,),
            "time_embedding.2.weight": (d, d),
            "time_embedding.2.bias": (d,),
            "time_projection.1.weight": (6 * d, d),
            "time_projection.1.bias": (6 * d,),
        }
        for i in range(self.num_layers):
            b = f"blocks.{i}."
            shapes[b + "modulation"] = (1, 6, d)
            for attn in ("self_attn", "cross_attn"):
                for proj in "qkvo":
                    shapes[f"{b}{attn}.{proj}.weight"] = (d, d)
                    shapes[f"{b}{attn}.{proj}.bias"] = (d,)
                shapes[f"{b}{attn}.norm_q.weight"] = (d,)
                shapes[f"{b}{attn}.norm_k.weight"] = (d,)
            shapes[b + "norm3.weight"] = (d,)
            shapes[b + "norm3.bias"] = (d,)
            shapes[b + "ffn.0.weight"] = (f, d)
            shapes[b + "ffn.0.bias"] = (f,)
            shapes[b + "ffn.2.weight"] = (d, f)
            shapes[b + "ffn.2.bias"] = (d,)
        shapes["head.modulation"] = (1, 2, d)
        shapes["head.head.weight"] = (self.patch_channels, d)
        shapes["head.head.bias"] = (self.patch_channels,)
        return shapes

    def num_params(self) -> int:
        total = 0
        for shape in self.tensor_shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total

    def size_name(self) -> str:
        """Human name of a released size, else a description."""
        for name, cfg in KNOWN_SIZES.items():
            if dataclasses.replace(self, text_len=cfg.text_len, eps=cfg.eps) == cfg:
                return name
        return f"custom (dim {self.dim}, {self.num_layers} layers)"

    @classmethod
    def from_shapes(
        cls,
        shapes: Mapping[str, Sequence[int]],
        *,
        text_len: int = 512,
        eps: float = 1e-6,
        num_heads: int | None = None,
    ) -> WanConfig:
        """Read the architecture from canonical key -> shape (`text_len`, `eps` cannot be seen).

        The number of heads is not visible either; Wan uses 128-wide heads, so it is dim / 128
        unless given (tiny test models use other widths).
        """
        try:
            dim = int(shapes["head.modulation"][-1])
            in_dim = int(shapes["patch_embedding.weight"][1])
            patch = tuple(int(s) for s in shapes["patch_embedding.weight"][2:])
            ffn_dim = int(shapes["blocks.0.ffn.0.weight"][0])
            freq_dim = int(shapes["time_embedding.0.weight"][1])
            text_dim = int(shapes["text_embedding.0.weight"][1])
            head_out = int(shapes["head.head.weight"][0])
        except KeyError as missing:
            raise CheckpointError(
                f"not a complete Wan2.1 DiT: tensor {missing} is missing"
            ) from None
        layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
        if len(patch) != 3 or head_out % (patch[0] * patch[1] * patch[2]):
            raise CheckpointError(
                f"unexpected patch embedding shape {shapes['patch_embedding.weight']}"
            )
        out_dim = head_out // (patch[0] * patch[1] * patch[2])
        if num_heads is None:
            if dim % HEAD_DIM:
                raise CheckpointError(
                    f"model width {dim} is not a multiple of Wan's 128-wide heads, so the number "
                    "of attention heads is unknown; pass num_heads (or store a 'config' with "
                    "'num_heads' in the safetensors metadata)"
                )
            num_heads = dim // HEAD_DIM
        return cls(
            dim=dim,
            ffn_dim=ffn_dim,
            num_heads=num_heads,
            num_layers=max(layers) + 1 if layers else 0,
            freq_dim=freq_dim,
            text_dim=text_dim,
            text_len=text_len,
            in_dim=in_dim,
            out_dim=out_dim,
            patch_size=patch,  # type: ignore[arg-type]
            eps=eps,
        )


KNOWN_SIZES: dict[str, WanConfig] = {
    "Wan2.1-T2V-1.3B": WanConfig(),
    "Wan2.1-T2V-14B": WanConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
}
