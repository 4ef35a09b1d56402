"""The comfy bridge: the ONLY module that touches ComfyUI (comfy.*, folder_paths, server,
comfy_api). Every import is inside a function, so the pack imports without ComfyUI, and the
tests swap in a small fake (tests/fake_comfy) with the same signatures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

MODEL_SUFFIXES = (".safetensors", ".pt", ".pth")
PREVIEW_SIZE = 512  # max side of the JPEG chunk previews shown while a stream runs


# -- devices and memory --------------------------------------------------------------------------


def torch_device() -> torch.device:
    import comfy.model_management as mm

    return torch.device(mm.get_torch_device())


def offload_device() -> torch.device:
    """Where large returned state lives between nodes (CPU unless ComfyUI keeps all on GPU)."""
    import comfy.model_management as mm

    return torch.device(mm.unet_offload_device())


def soft_empty_cache() -> None:
    import comfy.model_management as mm

    mm.soft_empty_cache()


class ManagedDiT(torch.nn.Module):
    """What the ModelPatcher manages: a container around our DiT. ModelPatcher writes
    `model.device` and bookkeeping attributes on the module it manages; CausalWanDiT's
    `device` is a read-only property, so it must not be that module."""

    def __init__(self, dit: torch.nn.Module):
        super().__init__()
        self.dit = dit
        self.device = dit.device


def make_patcher(dit: torch.nn.Module) -> Any:
    """Wrap our DiT in a ModelPatcher so ComfyUI's memory manager loads/offloads it."""
    import comfy.model_management as mm
    import comfy.model_patcher

    size = sum(p.numel() * p.element_size() for p in dit.parameters())
    size += sum(b.numel() * b.element_size() for b in dit.buffers())
    return comfy.model_patcher.ModelPatcher(
        ManagedDiT(dit),
        load_device=mm.get_torch_device(),
        offload_device=mm.unet_offload_device(),
        size=size,
    )


def load_model(model: Any, memory_required: int = 0) -> None:
    """Load an AdaStateModel's patcher onto the compute device, keeping `memory_required`
    bytes free beside it (K/V cache, activations, VAE cache: tensors ComfyUI does not own)."""
    import comfy.model_management as mm

    mm.load_models_gpu([model.patcher], memory_required=int(memory_required))


# -- ComfyUI's own MODEL as the stream's DiT -----------------------------------------------------

# ComfyUI's Wan classes that are not plain text-to-video (comfy/ldm/wan/*.py)
WAN_VARIANTS = {
    "VaceWanModel": "a Wan2.1 VACE model (video editing / reference conditioning)",
    "CameraWanModel": "a camera-controlled Wan model (Fun Camera)",
    "WanModel_S2V": "a Wan2.2 speech-to-video model",
    "HumoWanModel": "a HuMo (human-centric, audio/reference) Wan model",
    "AnimateWanModel": "a Wan2.2 Animate model",
    "SCAILWanModel": "a SCAIL pose-conditioned Wan model",
    "SCAIL2WanModel": "a SCAIL pose-conditioned Wan model",
    "MultiTalkWanModel": "a MultiTalk (audio-driven) Wan model",
}
T2V_HINT = (
    "Connect a Wan2.1 text-to-video model (e.g. Load Diffusion Model with "
    "wan2.1_t2v_1.3B_fp16.safetensors, a causal Self-Forcing/AdaState repack, or a GGUF of it)."
)


def native_dit(model: Any, attention: str = "comfy") -> Any:
    """Our stream's DiT over the layers of a ComfyUI MODEL (from any loader, after LoRA and
    patch nodes, fully or partially loaded): an `ExternalWanDiT` whose layers are the MODEL's
    own modules, fed the dtype ComfyUI computes the model in, its bare parameters read with
    ComfyUI's `cast_to`, attention optionally through ComfyUI's own attention function.
    ComfyUI's WanModel and CausalWanModel qualify, and any tree with their layer names and
    Wan2.1 T2V shapes; known Wan variants and other families raise ValueError (what the MODEL
    is and what to connect)."""
    import comfy.model_management as mm

    from adastate_core.errors import CheckpointError
    from adastate_core.model.external import ExternalWanDiT, check_t2v_tree

    base = getattr(model, "model", None)
    layers = getattr(base, "diffusion_model", None)
    if base is None or layers is None or not hasattr(model, "load_device"):
        raise ValueError(
            f"expected a MODEL from a ComfyUI loader, got {type(model).__name__}. {T2V_HINT}"
        )
    name = type(layers).__name__
    if name in WAN_VARIANTS:
        raise ValueError(
            f"the connected MODEL is {WAN_VARIANTS[name]}, not Wan2.1 text-to-video. {T2V_HINT}"
        )
    model_type = getattr(layers, "model_type", "t2v")
    if model_type != "t2v":
        raise ValueError(
            f"the connected MODEL is a Wan {model_type} model (image-to-video / first-last-frame), "
            f"not text-to-video. {T2V_HINT}"
        )
    if getattr(layers, "ref_conv", None) is not None:
        raise ValueError(
            f"the connected MODEL is a Wan Fun reference-image model, not text-to-video. {T2V_HINT}"
        )
    latent = type(getattr(base, "latent_format", None)).__name__
    if latent not in ("Wan21", "NoneType"):
        raise ValueError(
            f"the connected MODEL uses the {latent} latent format; AdaState runs Wan2.1 (16-channel "
            f"Wan2.1 VAE latents). {T2V_HINT}"
        )
    try:
        config = check_t2v_tree(
            layers,
            num_heads=getattr(layers, "num_heads", None),
            text_len=getattr(layers, "text_len", None),
        )
    except CheckpointError as err:
        raise ValueError(f"{err}. {T2V_HINT}") from None
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()

    def param(p: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return mm.cast_to(p, dtype=dtype, device=device)

    def identity() -> tuple:
        return (id(base), str(getattr(model, "patches_uuid", "")))

    attend: Any = comfy_attention(model) if attention == "comfy" else attention
    return ExternalWanDiT(
        layers,
        config=config,
        compute_dtype=dtype,
        device=torch.device(model.load_device),
        param=param,
        attention=attend,
        identity=identity,
    )


def comfy_attention(model: Any):
    """Attention through ComfyUI's `optimized_attention`, with the MODEL's transformer options:
    --use-sage-attention / --use-flash-attention and attention overrides set by patch nodes
    (e.g. KJNodes' Sage/Flash patches) apply to the stream."""
    from comfy.ldm.modules import attention as comfy_attn

    options = (getattr(model, "model_options", None) or {}).get("transformer_options", {})

    def comfy(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads, dim = q.shape[2], q.shape[3]
        out = comfy_attn.optimized_attention(
            q.flatten(2), k.flatten(2), v.flatten(2), heads, transformer_options=options
        )
        return out.unflatten(-1, (heads, dim))

    return comfy


def is_native(model: Any) -> bool:
    """Whether an ADASTATE_MODEL runs on a ComfyUI MODEL's own layers."""
    from adastate_core.model.external import ExternalWanDiT

    return isinstance(getattr(model, "dit", None), ExternalWanDiT)


def check_interrupted() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


# -- files ---------------------------------------------------------------------------------------


def diffusion_model_names() -> list[str]:
    import folder_paths

    names = folder_paths.get_filename_list("diffusion_models")
    return sorted(n for n in names if n.lower().endswith(MODEL_SUFFIXES))


def full_path(folder: str, name: str) -> str:
    import folder_paths

    return folder_paths.get_full_path_or_raise(folder, name)


def output_directory() -> str:
    import folder_paths

    return folder_paths.get_output_directory()


def temp_directory() -> str:
    import folder_paths

    return folder_paths.get_temp_directory()


def save_path(prefix: str, folder: str, width: int, height: int) -> tuple[str, str, int, str]:
    """-> (full_folder, filename, counter, subfolder) for a new file; ComfyUI refuses
    prefixes that would leave `folder` (`..`)."""
    import folder_paths

    try:
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
            prefix, folder, width, height
        )
    except Exception as err:  # ComfyUI raises a bare Exception for "../" prefixes
        raise ValueError(
            f"filename_prefix {prefix!r} cannot be used: {err}. Use a name or a sub-folder "
            "inside the output folder, without '..'"
        ) from None
    return full_folder, filename, counter, subfolder


def numbered_name(filename: str, counter: int, ext: str) -> str:
    """ComfyUI's output naming, `<prefix>_00001_.<ext>`: the trailing `_` is what
    `get_save_image_path` recognises when it picks the next counter, so a re-run never reuses
    a number (a name without it is never counted and the same number comes back every run)."""
    return f"{filename}_{counter:05}_.{ext}"


# -- progress, events, outputs -------------------------------------------------------------------


def progress(total: int) -> Any:
    import comfy.utils

    return comfy.utils.ProgressBar(total)


def save_temp_preview(image: Any, name: str) -> dict[str, str]:
    """Write a PIL image as JPEG into ComfyUI's temp folder (replacing the previous one of the
    same name, atomically) -> the /view file reference the frontend shows."""
    folder = Path(temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.partial"
    image.convert("RGB").save(tmp, format="JPEG", quality=85)
    os.replace(tmp, folder / name)
    return {"filename": name, "subfolder": "", "type": "temp"}


def executing_prompt_id() -> str | None:
    """The id of the prompt being executed (None outside one, or on hosts without it)."""
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else str(context.prompt_id)


def send_event(name: str, data: dict) -> None:
    """Send a custom message to the browser tab that queued the running prompt, as ComfyUI
    sends its own progress (`server.client_id`): never broadcast to every open tab. Nothing is
    sent without a server or when the prompt came without a client id (API use)."""
    try:
        import server

        instance = server.PromptServer.instance
    except (ImportError, AttributeError):
        return
    client = getattr(instance, "client_id", None)
    if instance is not None and client is not None:
        instance.send_sync(name, data, client)


def video_output(path: str | os.PathLike) -> Any:
    """A comfy_api VIDEO for `path` on hosts that have it, else None."""
    try:
        from comfy_api.input_impl import VideoFromFile
    except ImportError:
        return None
    return VideoFromFile(str(path))


def vae_state_dict(vae: Any) -> dict[str, torch.Tensor]:
    """The weights of a native ComfyUI VAE (`comfy.sd.VAE`)."""
    model = getattr(vae, "first_stage_model", None)
    if model is None:
        raise ValueError(
            f"expected a VAE from ComfyUI's VAELoader (wan_2.1_vae.safetensors), got "
            f"{type(vae).__name__}"
        )
    return model.state_dict()


def encode_text(clip: Any, text: str) -> list:
    """CONDITIONING of `text` from a native CLIP object (CLIPTextEncode's calls)."""
    tokens = clip.tokenize(text)
    if hasattr(clip, "encode_from_tokens_scheduled"):
        return clip.encode_from_tokens_scheduled(tokens)
    out = clip.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
    cond = out.pop("cond")
    return [[cond, out]]
