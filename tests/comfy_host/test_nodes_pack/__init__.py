"""Test-only ComfyUI nodes for the real-host test (tests/test_comfyui_host.py).

No small umT5 exists (CLIPLoader type "wan" always builds the 5.7 B encoder), so the host test
replaces the text encoder with a seeded stand-in that has the same interface and output format:

* AdaStateTest_CLIP: a CLIP-like object for core CLIPTextEncode and AdaState_PromptSchedule;
  each text maps to a fixed random CONDITIONING ([1, 512, 4096], rows past the text's token
  count zeroed, like umT5 + ComfyUI's padding).
* AdaStateTest_Conditioning: the same CONDITIONING straight from a seed and a length.

Loaded only by the host test (its temp custom_nodes folder); never part of the node pack.
"""

from __future__ import annotations

import zlib

import torch

TEXT_LEN = 512
TEXT_DIM = 4096


def random_conditioning(seed: int, length: int, tokens: int = TEXT_LEN, dim: int = TEXT_DIM):
    """CONDITIONING: [[tensor [1, tokens, dim], {"pooled_output": None}]], rows >= length zero."""
    gen = torch.Generator().manual_seed(int(seed) & 0xFFFFFFFFFFFF)
    cond = torch.randn(1, tokens, dim, generator=gen) * 0.1
    cond[:, max(1, min(int(length), tokens)) :] = 0
    return [[cond, {"pooled_output": None}]]


class FakeWanCLIP:
    """Duck-typed comfy.sd.CLIP: tokenize / encode_from_tokens(_scheduled) / encode."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def clone(self):
        return FakeWanCLIP(self.seed)

    def tokenize(self, text, return_word_ids=False, **kwargs):
        return {"text": str(text)}

    def _cond(self, tokens):
        text = tokens["text"] if isinstance(tokens, dict) else str(tokens)
        seed = zlib.crc32(text.encode("utf-8")) ^ self.seed
        length = min(TEXT_LEN, 2 + len(text.split()))  # umT5: ~1 token per word, + EOS
        return random_conditioning(seed, length)

    def encode_from_tokens_scheduled(
        self, tokens, unprojected=False, add_dict=None, show_pbar=True
    ):
        cond, extra = self._cond(tokens)[0]
        return [[cond, {**extra, **(add_dict or {})}]]

    def encode_from_tokens(self, tokens, return_pooled=False, return_dict=False):
        cond = self._cond(tokens)[0][0]
        if return_dict:
            return {"cond": cond, "pooled_output": None}
        return (cond, None) if return_pooled else cond

    def encode(self, text):
        return self.encode_from_tokens(self.tokenize(text))

    def load_model(self):
        return None

    def get_sd(self):
        return {}


class AdaStateTest_CLIP:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            }
        }

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "AdaState/testing"
    DESCRIPTION = "Test only: a stand-in umT5 text encoder (seeded random embeddings per text)."

    def load(self, seed):
        return (FakeWanCLIP(seed),)


class AdaStateTest_Conditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                "length": ("INT", {"default": 12, "min": 1, "max": TEXT_LEN}),
            },
            "optional": {
                "text": ("STRING", {"default": "", "multiline": True}),
            },
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "AdaState/testing"
    DESCRIPTION = "Test only: seeded random CONDITIONING [1, 512, 4096], rows >= length zeroed."

    def make(self, seed, length, text=""):
        if text:
            seed = seed ^ zlib.crc32(text.encode("utf-8"))
        return (random_conditioning(seed, length),)


def _decode_memo():
    """The AdaState pack's Decode Chunk memo, found among the loaded modules (ComfyUI imports
    the pack under its folder name)."""
    import sys

    for name, module in list(sys.modules.items()):
        memo = getattr(module, "MEMO", None)
        if name.endswith("nodes.decode_nodes") and type(memo).__name__ == "DecodeMemo":
            return memo
    raise RuntimeError("the AdaState pack's nodes.decode_nodes is not loaded")


class AdaStateTest_DecodeStats:
    """Test only: how many chunks the pack's Decode Chunk nodes ran through the VAE decoder
    (and how many decoder caches they hold); `reset` zeroes the counter and drops the caches."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"reset": ("BOOLEAN", {"default": False})}}

    @classmethod
    def IS_CHANGED(cls, reset):
        return float("nan")  # always runs

    RETURN_TYPES = ("STRING",)
    FUNCTION = "stats"
    OUTPUT_NODE = True
    CATEGORY = "AdaState/testing"

    def stats(self, reset):
        import json

        memo = _decode_memo()
        data = {"decoded_chunks": memo.decoded_chunks, "caches": len(memo)}
        if reset:
            memo.clear()
            memo.decoded_chunks = 0
        text = json.dumps(data)
        return {"ui": {"text": [text]}, "result": (text,)}


class AdaStateTest_SaveTensor:
    """Test only: an IMAGE batch saved bit-exactly as `<output>/<name>.npy` (float32), to compare
    frames without any 8-bit conversion (ComfyUI's SaveImage truncates to uint8, AdaState's
    writers round)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "name": ("STRING", {"default": "frames"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "AdaState/testing"

    def save(self, images, name):
        import os

        import folder_paths
        import numpy as np

        path = os.path.join(folder_paths.get_output_directory(), f"{name}.npy")
        np.save(path, images.detach().cpu().float().numpy())
        return {"ui": {"text": [path]}}


class AdaStateTest_LowVram:
    """Test only: a clone of a MODEL that ComfyUI always loads in low-VRAM mode (a 1-byte
    weight budget: every layer stays on the offload device and is cast per call, LoRA
    patches applied in the cast), as on a small GPU."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "wrap"
    CATEGORY = "AdaState/testing"

    def wrap(self, model):
        import uuid

        clone = model.clone()
        # a patch set of its own: ComfyUI re-patches (and so reloads) the shared weights for it
        # instead of keeping them as another patcher left them
        clone.patches_uuid = uuid.uuid4()
        load = clone.load

        def low_vram_load(device_to=None, lowvram_model_memory=0, force_patch_weights=False,
                          full_load=False, **kwargs):  # fmt: skip
            return load(device_to, lowvram_model_memory=1,
                        force_patch_weights=force_patch_weights, full_load=False, **kwargs)  # fmt: skip

        clone.load = low_vram_load
        return (clone,)


class AdaStateTest_ModelReport:
    """Test only: what a MODEL is after a run: its diffusion model class, dtype, how many
    layers ComfyUI casts per call (low-VRAM) and how many weight patches (LoRA) it holds."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "after": ("IMAGE",)}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "report"
    OUTPUT_NODE = True
    CATEGORY = "AdaState/testing"

    def report(self, model, after):
        import json

        dm = model.model.diffusion_model
        cast = sum(1 for m in dm.modules() if getattr(m, "comfy_cast_weights", False))
        data = {
            "class": type(dm).__name__,
            "dtype": str(model.model.get_dtype()),
            "manual_cast": str(getattr(model.model, "manual_cast_dtype", None)),
            "cast_layers": cast,
            "patches": len(model.patches),
            "lowvram": bool(getattr(model.model, "model_lowvram", False)),
        }
        text = json.dumps(data)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {
    "AdaStateTest_SaveTensor": AdaStateTest_SaveTensor,
    "AdaStateTest_CLIP": AdaStateTest_CLIP,
    "AdaStateTest_Conditioning": AdaStateTest_Conditioning,
    "AdaStateTest_DecodeStats": AdaStateTest_DecodeStats,
    "AdaStateTest_LowVram": AdaStateTest_LowVram,
    "AdaStateTest_ModelReport": AdaStateTest_ModelReport,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AdaStateTest_SaveTensor": "Test save IMAGE as .npy (AdaState tests)",
    "AdaStateTest_CLIP": "Test CLIP stand-in (AdaState tests)",
    "AdaStateTest_Conditioning": "Test Conditioning (AdaState tests)",
    "AdaStateTest_DecodeStats": "Test decode statistics (AdaState tests)",
    "AdaStateTest_LowVram": "Test force low-VRAM loading (AdaState tests)",
    "AdaStateTest_ModelReport": "Test MODEL report (AdaState tests)",
}
