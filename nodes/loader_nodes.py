"""Load AdaState Model: a causal Wan2.1 DiT from models/diffusion_models."""

from __future__ import annotations

from adastate_core.model import load_dit
from adastate_core.model.loader import default_compute_dtype

from . import bridge
from .common import CATEGORY
from .values import AdaStateModel

WEIGHT_DTYPES = ["default", "bf16", "fp16", "fp8_e4m3fn"]
ATTENTION = ["sdpa", "sageattention", "cudnn"]  # new choices only at the end


class LoadModel:
    DESCRIPTION = (
        "Loads a causal few-step Wan2.1 T2V DiT (Self-Forcing self_forcing_dmd.pt, Causal "
        "Forcing, Reward Forcing, LongLive or an AdaState fine-tune) from "
        "models/diffusion_models. The base Wan2.1 T2V model has the same shapes and loads, but "
        "is not distilled for 4-step chunk-wise sampling and gives poor video."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("ADASTATE_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The causal DiT, managed by ComfyUI's model memory manager.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit_name": (
                    bridge.diffusion_model_names(),
                    {"tooltip": "A causal few-step Wan2.1 DiT in models/diffusion_models (.safetensors / .pt), e.g. self_forcing_dmd.pt. Not the base Wan2.1 T2V model (same shapes, but not distilled for chunk-wise sampling)."},
                ),
                "weight_dtype": (
                    WEIGHT_DTYPES,
                    {"default": "default", "tooltip": "Precision of the weights and compute: default (bf16 on GPU, fp32 on CPU; fp8 files stay fp8), bf16, fp16, or fp8_e4m3fn weight storage (halves VRAM)."},
                ),
                "attention": (
                    ATTENTION,
                    {"default": "sdpa", "tooltip": "Attention backend: sdpa (PyTorch, always available) or sageattention (faster on CUDA if installed; falls back to sdpa)."},
                ),
            }
        }  # fmt: skip

    def load(self, dit_name: str, weight_dtype: str, attention: str):
        path = bridge.full_path("diffusion_models", dit_name)
        compute = default_compute_dtype(bridge.torch_device())
        storage = None
        if weight_dtype in ("bf16", "fp16"):
            compute = weight_dtype
        elif weight_dtype == "fp8_e4m3fn":
            storage = weight_dtype
        dit = load_dit(
            path,
            dtype=compute,
            weight_dtype=storage,
            device=bridge.offload_device(),
            attention=attention,
        )
        patcher = bridge.make_patcher(dit)
        return (AdaStateModel(patcher, dit, str(path), weight_dtype, attention),)
