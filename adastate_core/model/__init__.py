"""The causal Wan2.1 DiT, its RoPE and attention backends, and checkpoint loading."""

from .config import KNOWN_SIZES, WanConfig
from .dit import CausalWanDiT, CrossKV, KVSegment
from .loader import inspect_checkpoint, load_dit, load_state_dict, read_checkpoint

__all__ = [
    "KNOWN_SIZES",
    "CausalWanDiT",
    "CrossKV",
    "KVSegment",
    "WanConfig",
    "inspect_checkpoint",
    "load_dit",
    "load_state_dict",
    "read_checkpoint",
]
