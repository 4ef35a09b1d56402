"""Load AdaState Model: a causal Wan2.1 DiT from models/diffusion_models."""

from __future__ import annotations

from adastate_core.model import load_dit
from adastate_core.model.loader import default_compute_dtype

from . import bridge
from .common import CATEGORY, NodeInputError
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


NATIVE_ATTENTION = ["comfy", "sdpa", "sageattention", "cudnn"]  # new choices only at the end


class NativeModel:
    DESCRIPTION = (
        "Runs the AdaState stream on a MODEL from ComfyUI's own loaders (Load Diffusion Model, "
        "Unet Loader (GGUF), ...) after LoRA and patch nodes (LoraLoaderModelOnly, ...). Its "
        "layers are called as they are (LoRA, GGUF dequantisation and low-VRAM partial "
        "loading work as in ComfyUI's own sampling); ComfyUI decides how much of it is on "
        "the GPU. It needs a Wan2.1 text-to-video model, ideally a causal few-step one (a "
        "Self-Forcing / AdaState repack). Ignored: model wrappers and torch.compile nodes, "
        "object patches (NAG, Enhance-A-Video), block-replace patches and the MODEL's "
        "sampling shift (the stream's shift setting rules). Attention overrides (e.g. "
        "KJNodes' Sage/Flash patches) apply with attention = comfy."
    )
    CATEGORY = f"{CATEGORY}/loaders"
    FUNCTION = "wrap"
    RETURN_TYPES = ("ADASTATE_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The MODEL's own Wan layers, driven by the AdaState stream.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "A Wan2.1 text-to-video MODEL from any loader, after LoRA / patch nodes (e.g. Load Diffusion Model -> LoraLoaderModelOnly). Causal few-step weights (Self-Forcing, AdaState) give good video; the base Wan2.1 T2V model is not distilled for chunk-wise sampling."},
                ),
                "attention": (
                    NATIVE_ATTENTION,
                    {"default": "comfy", "tooltip": "comfy: ComfyUI's attention (its --use-sage-attention / flash settings and attention patch nodes apply); sdpa: PyTorch; sageattention: SageAttention if installed; cudnn: PyTorch SDPA with cuDNN's kernel first (Hopper GPUs)."},
                ),
            }
        }  # fmt: skip

    def wrap(self, model, attention: str):
        try:
            dit = bridge.native_dit(model, attention)
        except ValueError as err:
            raise NodeInputError(str(err)) from None
        label = f"ComfyUI MODEL ({type(dit.layers).__name__}, {dit.config.size_name()})"
        dtype = str(dit.compute_dtype).replace("torch.", "")
        return (AdaStateModel(model, dit, label, dtype, attention),)
