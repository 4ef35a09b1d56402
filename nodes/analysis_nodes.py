"""Attention Probe: where the live chunk's attention goes in the cache (paper Fig. 2a)."""

from __future__ import annotations

from adastate_core.analysis import attention_shares, render_bar_chart

from .common import CATEGORY, MODEL_INPUT, use_model
from .values import state_to


class AttentionProbe:
    DESCRIPTION = (
        "Measures how the next chunk's queries split their attention over the cached frames "
        "(anchor slot and content window) at one denoising step, averaged over heads and "
        "layers, renormalised over the cache (paper Appendix E). Draws a bar chart."
    )
    CATEGORY = f"{CATEGORY}/analysis"
    FUNCTION = "probe"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("chart",)
    OUTPUT_TOOLTIPS = ("Bar chart of the attention share per cache position (sums to 1).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "stream": (
                    "ADASTATE_STREAM",
                    {"tooltip": "The stream to probe (after at least one Update State); it is not changed."},
                ),
                "step": (
                    "INT",
                    {"default": 0, "min": 0, "max": 63, "tooltip": "Denoising step to probe, 0 = the noisiest."},
                ),
            }
        }  # fmt: skip

    def probe(self, model, stream, step: int):
        dit = use_model(model, stream.state.config)
        shares = attention_shares(dit, state_to(stream.state, dit.device), step)
        title = (
            f"attention share per cache position: chunk {shares.chunk_index + 1}, step {step} "
            f"(mass on the cache {shares.off_diagonal:.3f})"
        )
        chart = render_bar_chart(shares.share.tolist(), list(shares.labels), title)
        return (chart,)
