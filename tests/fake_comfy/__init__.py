"""A small fake of exactly the ComfyUI functions the bridge uses (real signatures, see
../shared/docs/COMFYUI.md), installed into sys.modules by `install`: comfy.model_management,
comfy.utils.ProgressBar, comfy.model_patcher.ModelPatcher, folder_paths, server; plus a fake
native VAE (`first_stage_model.state_dict()`) and a fake CLIP whose encode gives CONDITIONING."""

from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

MODULES = ("comfy", "comfy.model_management", "comfy.utils", "comfy.model_patcher",
           "comfy.ldm", "comfy.ldm.modules", "comfy.ldm.modules.attention",
           "folder_paths", "server")  # fmt: skip


class InterruptProcessingException(Exception):
    pass


@dataclass
class FakeHost:
    """What the fake recorded; `interrupt_after_chunks` makes Cancel hit after N chunk events."""

    models_dir: Path
    output_dir: Path
    temp_dir: Path
    events: list = field(default_factory=list)
    event_clients: list = field(default_factory=list)
    progress: list = field(default_factory=list)
    loads: list = field(default_factory=list)
    interrupted: bool = False
    interrupt_after_chunks: int | None = None
    attention_calls: list = field(default_factory=list)


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model, self.load_device, self.offload_device, self.size = (
            model, load_device, offload_device, size,
        )  # fmt: skip
        if not hasattr(model, "model_loaded_weight_memory"):  # as the real __init__ does
            model.model_loaded_weight_memory = 0


def _model_management(host: FakeHost) -> types.ModuleType:
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.unet_dtype = lambda device=None, model_params=0, supported_dtypes=None, weight_dtype=None: (
        torch.float32
    )
    mm.soft_empty_cache = lambda force=False: None

    def load_models_gpu(models, memory_required=0, force_patch_weights=False,
                        minimum_memory_required=None, force_full_load=False):  # fmt: skip
        for m in models:
            host.loads.append((m, memory_required))
            m.model.to(m.load_device)
            m.model.device = m.load_device  # as the real ModelPatcher.load does

    def throw_exception_if_processing_interrupted():
        if host.interrupted:
            host.interrupted = False
            raise InterruptProcessingException()

    def cast_to(weight, dtype=None, device=None, non_blocking=False, copy=False, stream=None):
        return weight.to(device=device, dtype=dtype, copy=copy)

    mm.cast_to = cast_to
    mm.load_models_gpu = load_models_gpu
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    return mm


def _utils(host: FakeHost) -> types.ModuleType:
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current = total, 0

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = value
            host.progress.append((value, self.total, preview))

        def update(self, value):
            self.update_absolute(self.current + value, self.total)

    utils.ProgressBar = ProgressBar
    return utils


def _folder_paths(host: FakeHost) -> types.ModuleType:
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(host.models_dir)

    def get_filename_list(folder_name):
        folder = host.models_dir / folder_name
        if not folder.is_dir():
            return []
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())

    def get_full_path(folder_name, filename):
        path = host.models_dir / folder_name / filename
        return str(path) if path.is_file() else None

    def get_full_path_or_raise(folder_name, filename):
        path = get_full_path(folder_name, filename)
        if path is None:
            raise FileNotFoundError(
                f"Model in folder '{folder_name}' with filename '{filename}' not found."
            )
        return path

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        # the real implementation, without the %date% variables
        def map_filename(filename):
            prefix_len = len(os.path.basename(filename_prefix))
            prefix = filename[: prefix_len + 1]
            try:
                digits = int(filename[prefix_len + 1 :].split("_")[0])
            except ValueError:
                digits = 0
            return digits, prefix

        filename_prefix = filename_prefix.replace("%width%", str(image_width))
        filename_prefix = filename_prefix.replace("%height%", str(image_height))
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        filename = os.path.basename(os.path.normpath(filename_prefix))
        full_output_folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
            raise Exception(
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {os.path.abspath(full_output_folder)}"
                f"\n         output_dir: {output_dir}"
                f"\n         commonpath: {os.path.commonpath((output_dir, os.path.abspath(full_output_folder)))}"
            )
        try:
            counter = (
                max(
                    filter(
                        lambda a: (
                            os.path.normcase(a[1][:-1]) == os.path.normcase(filename)
                            and a[1][-1] == "_"
                        ),
                        map(map_filename, os.listdir(full_output_folder)),
                    )
                )[0]
                + 1
            )
        except ValueError:
            counter = 1
        except FileNotFoundError:
            os.makedirs(full_output_folder, exist_ok=True)
            counter = 1
        return full_output_folder, filename, counter, subfolder, filename_prefix

    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_full_path_or_raise = get_full_path_or_raise
    fp.get_output_directory = lambda: str(host.output_dir)
    fp.get_temp_directory = lambda: str(host.temp_dir)
    fp.get_save_image_path = get_save_image_path
    return fp


def _server(host: FakeHost) -> types.ModuleType:
    server = types.ModuleType("server")

    class PromptServer:
        instance = None
        client_id = "fake-client"  # the real server sets it to the queuing tab's id

        def send_sync(self, event, data, sid=None):
            host.events.append((event, data))
            host.event_clients.append(sid)
            if (
                event == "adastate.chunk"
                and host.interrupt_after_chunks is not None
                and data["chunk"] >= host.interrupt_after_chunks  # 1-based
            ):
                host.interrupted = True

    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer
    return server


def _attention(host: FakeHost) -> types.ModuleType:
    """comfy.ldm.modules.attention.optimized_attention: q, k, v [B, L, heads*d] -> same; the
    fake counts its calls and the transformer_options it was given."""
    attention = types.ModuleType("comfy.ldm.modules.attention")

    def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                            skip_output_reshape=False, **kwargs):  # fmt: skip
        host.attention_calls.append(kwargs.get("transformer_options"))
        b, _, inner = q.shape
        q, k, v = (t.unflatten(-1, (heads, inner // heads)).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).flatten(2)

    attention.optimized_attention = optimized_attention
    return attention


def install(monkeypatch, root: Path) -> FakeHost:
    """Put the fake modules into sys.modules (undone by monkeypatch) -> the recorder."""
    host = FakeHost(root / "models", root / "output", root / "temp")
    for d in (host.models_dir, host.output_dir, host.temp_dir):
        d.mkdir(parents=True, exist_ok=True)
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    mm, utils, patcher = (
        _model_management(host),
        _utils(host),
        types.ModuleType("comfy.model_patcher"),
    )
    patcher.ModelPatcher = ModelPatcher
    comfy.model_management, comfy.utils, comfy.model_patcher = mm, utils, patcher
    ldm, ldm_modules, attention = (
        types.ModuleType("comfy.ldm"),
        types.ModuleType("comfy.ldm.modules"),
        _attention(host),
    )
    comfy.ldm, ldm.modules, ldm_modules.attention = ldm, ldm_modules, attention
    modules = {
        "comfy.ldm": ldm,
        "comfy.ldm.modules": ldm_modules,
        "comfy.ldm.modules.attention": attention,
        "comfy": comfy,
        "comfy.model_management": mm,
        "comfy.utils": utils,
        "comfy.model_patcher": patcher,
        "folder_paths": _folder_paths(host),
        "server": _server(host),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return host


# -- native objects ------------------------------------------------------------------------------


class _StateModule:
    def __init__(self, state: dict[str, torch.Tensor]):
        self._state = state

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._state)


class FakeVAE:
    """comfy.sd.VAE as the bridge sees it: `.first_stage_model.state_dict()`."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.first_stage_model = _StateModule(state)


class FakeCLIP:
    """A text encoder whose CLIPTextEncode calls give CONDITIONING [[rows [1, L, width], {}]]:
    deterministic pseudo rows per text, trailing rows zero (padding) as the real one."""

    def __init__(self, width: int = 32, rows: int = 16, real_rows: int = 10):
        self.width, self.rows, self.real_rows = width, rows, real_rows

    def tokenize(self, text: str) -> dict:
        return {"text": text}

    def encode_from_tokens_scheduled(self, tokens: dict) -> list:
        from adastate_core.pipeline import pseudo_embedding

        rows = pseudo_embedding(tokens["text"], self.rows, self.width)
        rows[:, self.real_rows :] = 0
        return [[rows, {"pooled_output": None}]]


# -- a native MODEL --------------------------------------------------------------------------------


class Wan21:
    """The name of ComfyUI's Wan2.1 latent format class (what the bridge checks)."""


class BaseModel(torch.nn.Module):
    """comfy.model_base.BaseModel as the bridge sees it: `diffusion_model`, `latent_format`,
    `manual_cast_dtype`, `get_dtype()`."""

    def __init__(self, diffusion_model, dtype=torch.float32, latent_format=None):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.latent_format = Wan21() if latent_format is None else latent_format
        self.manual_cast_dtype = None
        self._dtype = dtype

    def get_dtype(self):
        return self._dtype


def native_model(diffusion_model, dtype=torch.float32, latent_format=None, options=None):
    """A MODEL (ModelPatcher) around a Wan module tree, as UNETLoader returns it."""
    import uuid

    patcher = ModelPatcher(
        BaseModel(diffusion_model, dtype, latent_format), torch.device("cpu"), torch.device("cpu")
    )
    patcher.patches_uuid = uuid.uuid4()
    patcher.model_options = {"transformer_options": dict(options or {})}
    return patcher
