"""Analysis helpers: the attention share per cache position (paper Appendix E, Fig. 2a), a bar
chart renderer, and the exact-seam decode memo used by chunk-wise decoding."""

from .attention import AttentionShares, attention_shares, frame_mass, render_bar_chart
from .decode_memo import DecodeMemo, tensor_digest

__all__ = [
    "AttentionShares",
    "DecodeMemo",
    "attention_shares",
    "frame_mass",
    "render_bar_chart",
    "tensor_digest",
]
