"""Helpers of the real-ComfyUI test: tiny model files, a headless server, the example
workflows shrunk to tiny sizes, and POST /prompt + /history polling (stdlib only)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEST_PACK = HERE / "test_nodes_pack"

DIT_NAME = "adastate_tiny_t2v.safetensors"
VAE_NAME = "wan_2.1_vae_random.safetensors"
WIDTH, HEIGHT = 64, 32
SECONDS = 1.5  # Generate: 2 chunks of 3 latent frames (9 + 12 video frames)


def write_models(root: Path, comfy_dir: Path | None = None, python: str | None = None) -> dict:
    """root/diffusion_models: a tiny Wan2.1 t2v DiT (dim 128, 1 head, 2 blocks, text_dim 4096)
    in the Comfy-Org repack layout; root/vae: a full-size (dim 96) random Wan2.1 VAE (core's
    VAELoader builds WanVAE with dim 96 whatever the file holds). With `comfy_dir`, the VAE
    also gets random encoder weights in the shapes the host's own WanVAE has (newer ComfyUI
    reads `encoder.conv1.weight` on load; AdaState only uses the decoder)."""
    import torch
    from safetensors.torch import save_file

    from adastate_core.model import WanConfig
    from adastate_core.model.random_weights import save_random_checkpoint
    from adastate_core.vae.random_weights import random_state_dict as random_vae

    dit = root / "diffusion_models" / DIT_NAME
    vae = root / "vae" / VAE_NAME
    cfg = WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, freq_dim=256)
    save_random_checkpoint(dit, cfg, seed=1, layout="comfyui")
    vae.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float16) for k, v in random_vae(dim=96, seed=2).items()}
    if comfy_dir is not None:
        gen = torch.Generator().manual_seed(3)
        for key, shape in host_vae_shapes(comfy_dir, python).items():
            if key not in tensors:
                t = torch.randn(shape, generator=gen)
                if len(shape) > 1:
                    t /= float(torch.tensor(shape[1:]).prod()) ** 0.5
                tensors[key] = t.to(torch.float16)
    save_file(tensors, str(vae))
    # the files the example workflows name, as empty stand-ins: the web app then opens them
    # as on a machine that has the models (no missing-models warnings over the canvas); the
    # tests that run a workflow switch its loaders to the tiny files above
    for folder, name in (("diffusion_models", "self_forcing_dmd.pt"),
                         ("diffusion_models", "self_forcing_dmd.safetensors"),
                         ("loras", "Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors"),
                         ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                         ("vae", "wan_2.1_vae.safetensors")):  # fmt: skip
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / name).touch()
    return {"dit": dit, "vae": vae}


NATIVE = "native_tiny_fp32.safetensors"  # ComfyUI repack, fp32: loads with UNETLoader
NATIVE_AR = "native_tiny_causal_ar.safetensors"  # the same, marked causal_ar
NATIVE_MERGED = "native_tiny_lora_merged.safetensors"  # official layout, LoRA merged at 0.8
NATIVE_GGUF = "native_tiny_Q8_0.gguf"  # the same weights as NATIVE, Q8_0 linears
NATIVE_GGUF_REF = "native_tiny_Q8_0_dequantised.safetensors"  # its dequantised weights
LORA = "native_tiny_lora.safetensors"  # kohya-style rank-4 LoRA on some linears
CLIP = "adastate_test_clip.mp4"  # a 9-frame clip in the input folder (Load Video)
LORA_STRENGTH = 0.8
LORA_RANK, LORA_ALPHA = 4, 2.0
LORA_TARGETS = ("self_attn.q", "self_attn.o", "cross_attn.k", "ffn.0", "ffn.2")


def native_config():
    """A tiny Wan2.1 T2V that ComfyUI's Wan detection builds right without metadata
    (0.3.64 reads none): 128-wide heads, frequency width 256, umT5 width 4096."""
    from adastate_core.model import WanConfig

    return WanConfig(dim=128, ffn_dim=256, num_heads=1, num_layers=2, freq_dim=256)


def write_native_models(root: Path) -> dict:
    """Files for AdaState from MODEL: the DiT as a ComfyUI repack (fp32, and marked
    causal_ar), a LoRA for LoraLoaderModelOnly and the weights with that LoRA merged (our
    loader's reference); with the `gguf` package, a Q8_0 GGUF of the DiT and its dequantised
    weights."""
    import torch
    from safetensors.torch import save_file

    from adastate_core.model.convert import convert_checkpoint
    from adastate_core.model.random_weights import random_state_dict

    cfg = native_config()
    folder = root / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    weights = random_state_dict(cfg, 5)
    official = root / "native_official.safetensors"
    save_file(weights, str(official), {"config": json.dumps({"num_heads": cfg.num_heads})})
    convert_checkpoint(official, folder / NATIVE, dtype="fp32")
    convert_checkpoint(official, folder / NATIVE_AR, dtype="fp32", causal_ar=True)

    gen = torch.Generator().manual_seed(11)
    lora, merged = {}, dict(weights)
    for i in range(cfg.num_layers):
        for target in LORA_TARGETS:
            key = f"blocks.{i}.{target}"
            w = weights[key + ".weight"]
            down = torch.randn(LORA_RANK, w.shape[1], generator=gen) * 0.05
            up = torch.randn(w.shape[0], LORA_RANK, generator=gen) * 0.05
            lora[f"diffusion_model.{key}.lora_down.weight"] = down
            lora[f"diffusion_model.{key}.lora_up.weight"] = up
            lora[f"diffusion_model.{key}.alpha"] = torch.tensor(LORA_ALPHA)
            scale = LORA_STRENGTH * LORA_ALPHA / LORA_RANK
            merged[key + ".weight"] = w + scale * (up @ down)
    (root / "loras").mkdir(parents=True, exist_ok=True)
    save_file(lora, str(root / "loras" / LORA))
    save_file(merged, str(folder / NATIVE_MERGED), {"config": json.dumps({"num_heads": 1})})
    files = {"native": folder / NATIVE, "merged": folder / NATIVE_MERGED}
    try:
        files.update(write_gguf(weights, folder))
    except ImportError:
        pass
    return files


def write_clip(path: Path, frames: int = 9) -> Path:
    """A small test clip (a moving gradient, 64x48) for Load Video."""
    import numpy as np

    from adastate_core.io import open_writer

    path.parent.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:48, 0:64]
    video = np.stack(
        [
            np.stack([(x * 4 + 8 * t) % 256, (y * 5) % 256, (x + y + 16 * t) % 256], -1)
            for t in range(frames)
        ]  # fmt: skip
    ).astype(np.uint8)
    with open_writer(path, fps=16) as writer:
        writer.write(video)
    return path


def write_gguf(weights: dict, folder: Path) -> dict:
    """A Q8_0 GGUF of `weights` as ComfyUI-GGUF reads Wan files (architecture "wan", official
    tensor names; 2-D linears quantised, the rest F32), and our safetensors of the weights
    it dequantises to (the reference)."""
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import save_file

    writer = gguf.GGUFWriter(str(folder / NATIVE_GGUF), "wan")
    reference = {}
    for name, t in weights.items():
        data = t.float().numpy()
        if t.ndim == 2 and t.shape[1] % 32 == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            back = gguf.quants.dequantize(packed, gguf.GGMLQuantizationType.Q8_0)
            reference[name] = torch.from_numpy(np.ascontiguousarray(back).reshape(t.shape))
        else:
            writer.add_tensor(name, data)
            reference[name] = t.float()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(reference, str(folder / NATIVE_GGUF_REF), {"config": json.dumps({"num_heads": 1})})
    return {"gguf": folder / NATIVE_GGUF, "gguf_ref": folder / NATIVE_GGUF_REF}


def host_vae_shapes(comfy_dir: Path, python: str | None = None) -> dict[str, list[int]]:
    """Key -> shape of the host's Wan2.1 VAE (its own WanVAE class, on the meta device)."""
    code = (
        "import json, torch\n"
        "from comfy.cli_args import args\n"
        "args.cpu = True\n"
        "from comfy.ldm.wan.vae import WanVAE\n"
        "with torch.device('meta'):\n"
        "    m = WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,\n"
        "               attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0)\n"
        "print(json.dumps({k: list(v.shape) for k, v in m.state_dict().items()}))\n"
    )
    python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
    res = subprocess.run([python, "-c", code], cwd=comfy_dir, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"could not read the host's WanVAE shapes:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pack_dir() -> Path:
    """The node pack under test: this checkout, or ADASTATE_PACK (another checkout, e.g. an
    older commit in a git worktree, to show that a test fails there)."""
    return Path(os.environ.get("ADASTATE_PACK") or REPO).resolve()


def already_linked(comfy_dir: Path) -> bool:
    """Whether COMFYUI_DIR/custom_nodes already holds the pack (then we do not add it)."""
    folder = comfy_dir / "custom_nodes"
    pack = pack_dir()
    return any(p.resolve() == pack for p in folder.iterdir()) if folder.is_dir() else False


def write_config(tmp: Path, comfy_dir: Path) -> Path:
    """extra_model_paths yaml: our models and a custom_nodes folder with the test pack (and
    this pack, unless ComfyUI already links it)."""
    nodes = tmp / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / "adastate_test_nodes").symlink_to(TEST_PACK, target_is_directory=True)
    if not already_linked(comfy_dir):
        (nodes / "adastate").symlink_to(pack_dir(), target_is_directory=True)
    yaml = tmp / "extra_model_paths.yaml"
    yaml.write_text(
        "adastate_host_test:\n"
        f"    base_path: {tmp}\n"
        "    diffusion_models: models/diffusion_models\n"
        "    vae: models/vae\n"
        "    text_encoders: models/text_encoders\n"
        "    loras: models/loras\n"
        "    custom_nodes: custom_nodes\n"
    )
    return yaml


class Server:
    def __init__(self, comfy_dir: Path, tmp: Path, python: str | None = None):
        self.comfy_dir, self.tmp = comfy_dir, tmp
        self.python = python or os.environ.get("COMFYUI_PYTHON") or sys.executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = tmp / "output"
        self.temp = tmp / "temp"
        self.log_path = tmp / "comfyui.log"
        self.proc: subprocess.Popen | None = None

    def start(self, config: Path, timeout: float = 240.0) -> None:
        for d in (self.output, self.temp, self.tmp / "input", self.tmp / "user"):
            d.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--extra-model-paths-config", str(config),
            "--output-directory", str(self.output), "--temp-directory", str(self.temp),
            "--input-directory", str(self.tmp / "input"), "--user-directory", str(self.tmp / "user"),
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=self.comfy_dir, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if getattr(self, "log", None):
            self.log.close()

    def tail(self, n: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict):
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(data).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"POST {path} -> {err.code}: {err.read().decode()}") from None

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        """Queue an API prompt, wait for it, return its /history entry."""
        answer = self.post("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        assert not answer.get("node_errors"), answer
        prompt_id = answer["prompt_id"]
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI died:\n{self.tail()}")
            time.sleep(0.5)
        self.post("/interrupt", {})
        raise TimeoutError(f"prompt {prompt_id} not done within {timeout:.0f} s:\n{self.tail()}")

    def file_of(self, item: dict) -> Path:
        if item.get("type", "output") == "output":
            root = self.output
        else:  # ComfyUI puts its temp folder at <--temp-directory>/temp
            root = self.temp / "temp" if (self.temp / "temp").is_dir() else self.temp
        return root / item.get("subfolder", "") / item["filename"]


def start_server(
    tmp: Path, comfy_dir: Path | None = None, native: bool = True, extra_nodes=()
) -> Server:
    """A headless ComfyUI (COMFYUI_DIR unless given) with this pack, the test pack and the tiny
    models (with `native`, also the files of `write_native_models`), plus the custom node
    folders `extra_nodes`, answering on a free port; the caller stops it."""
    comfy_dir = Path(comfy_dir or os.environ["COMFYUI_DIR"]).resolve()
    if not (comfy_dir / "main.py").is_file():
        raise RuntimeError(f"COMFYUI_DIR={comfy_dir} is not a ComfyUI checkout (no main.py)")
    write_models(tmp / "models", comfy_dir)
    if native:
        write_native_models(tmp / "models")
    write_clip(tmp / "input" / CLIP)
    write_clip(tmp / "input" / "clip.mp4")  # the name the example workflow shows
    config = write_config(tmp, comfy_dir)
    for folder in extra_nodes:
        link = tmp / "custom_nodes" / Path(folder).name
        if not link.exists():
            link.symlink_to(Path(folder).resolve(), target_is_directory=True)
    srv = Server(comfy_dir, tmp)
    try:
        srv.start(config)
    except BaseException:
        srv.stop()
        raise
    return srv


def error_text(status: dict) -> str:
    """The execution error of a /history status, readable."""
    for kind, data in status.get("messages", []):
        if kind == "execution_error":
            trace = "".join(data.get("traceback") or [])
            return (
                f"{data.get('node_type')} (node {data.get('node_id')}): "
                f"{data.get('exception_type')}: {data.get('exception_message')}\n{trace[-3000:]}"
            )
    return json.dumps(status)[-2000:]


def node_of(prompt: dict, cls: str) -> str:
    """The id of the (first) node of class `cls` in an API prompt."""
    return next(k for k, v in prompt.items() if v["class_type"] == cls)


def write_tiny_text_encoder(path: Path) -> Path:
    """A tiny umT5 encoder in ComfyUI's layout (transformers names + an embedded tokenizer
    blob): enough for the CLI to recognise it and key its prompt cache; never run."""
    import torch
    from safetensors.torch import save_file

    d, heads, kv, ff, vocab = 4096, 2, 4, 16, 64  # umT5-XXL's width: the CLI checks it
    g = torch.Generator().manual_seed(0)
    t = {"shared.weight": torch.randn(vocab, d, generator=g)}
    attn = "encoder.block.0.layer.0.SelfAttention."
    for name in ("q", "k", "v"):
        t[attn + name + ".weight"] = torch.randn(heads * kv, d, generator=g)
    t[attn + "o.weight"] = torch.randn(d, heads * kv, generator=g)
    t[attn + "relative_attention_bias.weight"] = torch.randn(32, heads, generator=g)
    t["encoder.block.0.layer.0.layer_norm.weight"] = torch.ones(d)
    ffn = "encoder.block.0.layer.1.DenseReluDense."
    t[ffn + "wi_0.weight"] = torch.randn(ff, d, generator=g)
    t[ffn + "wi_1.weight"] = torch.randn(ff, d, generator=g)
    t[ffn + "wo.weight"] = torch.randn(d, ff, generator=g)
    t["encoder.block.0.layer.1.layer_norm.weight"] = torch.ones(d)
    t["encoder.final_layer_norm.weight"] = torch.ones(d)
    t["spiece_model"] = torch.randint(0, 255, (64,), dtype=torch.uint8, generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in t.items()}, str(path))
    return path


def cache_stand_in_embedding(cache_dir: Path, encoder: Path, text: str) -> Path:
    """Put the test pack's stand-in embedding of `text` (what CLIPTextEncode gives in the host
    test) into the CLI's prompt cache for `encoder`, so `adastate generate` conditions on
    exactly the host's rows without running a text encoder."""
    from test_nodes_pack import TEXT_LEN, FakeWanCLIP

    from adastate_core.text.cache import EmbeddingCache
    from adastate_core.text.encoder import encoder_identity

    cond = FakeWanCLIP(0).encode_from_tokens_scheduled({"text": text})[0][0]
    length = min(TEXT_LEN, 2 + len(text.split()))
    assert not cond[0, length:].any() and cond[0, length - 1].any()
    identity = encoder_identity(encoder, device="cpu")
    return EmbeddingCache(cache_dir).put(text, identity, cond[0, :length])


def shrink(prompt: dict, seconds: float = SECONDS) -> dict:
    """An example API workflow at tiny sizes, on the tiny models, with the test text encoder."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        inputs, cls = node["inputs"], node["class_type"]
        if cls == "CLIPLoader":
            node["class_type"], node["inputs"] = "AdaStateTest_CLIP", {"seed": 0}
            continue
        if cls == "AdaState_LoadModel":
            inputs["dit_name"] = DIT_NAME
        if cls == "UNETLoader":
            inputs["unet_name"] = NATIVE
        if cls.startswith("UnetLoaderGGUF"):
            inputs["unet_name"] = NATIVE_GGUF
        if cls in ("LoraLoaderModelOnly", "LoraLoader"):
            inputs["lora_name"] = LORA
        if cls == "LoadVideo":
            inputs["file"] = CLIP
        if cls == "VAELoader":
            inputs["vae_name"] = VAE_NAME
        if "width" in inputs:
            inputs["width"], inputs["height"] = WIDTH, HEIGHT
        if "seconds" in inputs:
            original = inputs["seconds"]
            inputs["seconds"] = seconds
            for other in out.values():  # scale a prompt schedule's switch times with it
                if other["class_type"] == "AdaState_PromptSchedule":
                    other["inputs"]["text"] = scale_schedule(
                        other["inputs"]["text"], seconds / original
                    )
        if "preview_frames" in inputs:
            inputs["preview_frames"] = 16
    return out


def scale_schedule(text: str, factor: float) -> str:
    def repl(m: re.Match) -> str:
        return f"{float(m.group(1)) * factor:g}:"

    return "\n".join(re.sub(r"^\s*([0-9.]+)\s*:", repl, line) for line in text.splitlines())


def video_frames(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a saved video or animation."""
    if path.suffix in (".webp", ".gif"):
        from PIL import Image

        with Image.open(path) as im:
            return getattr(im, "n_frames", 1), im.width, im.height
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n = sum(1 for _ in container.decode(stream))
        return n, stream.codec_context.width, stream.codec_context.height
