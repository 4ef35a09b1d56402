"""AdaState from MODEL: per-chunk time of the stream driving another program's Wan layers
(ExternalWanDiT) vs our own CausalWanDiT, same weights and config, timed A/B in one process.

    python benchmarks/native_model.py                      # CPU ratio, ComfyUI-shaped torch tree
    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/native_model.py \\
        --comfyui                                          # the same over ComfyUI's own WanModel
    python benchmarks/native_model.py --gpu [--comfyui]    # absolute, 1.3B bf16 @480x832,
        # plus the bf16 drift of both against an fp32 reference and a forced VRAM budget run

Figure of merit (CPU): median external/own time of one steady chunk (4 denoising calls + the
t = 0 cache pass) from the same immutable stream state, alternated `--repeats` times; target
<= 1.05. `--comfyui` builds ComfyUI's `comfy.ldm.wan.model.WanModel` with `comfy.ops`
layers (manual_cast, as its loaders do for a model computed in another dtype than stored)
and runs it under ComfyUI's interrupt checks, i.e. what AdaState from MODEL drives.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from adastate_core.model import CausalWanDiT, WanConfig  # noqa: E402
from adastate_core.model.external import ExternalWanDiT  # noqa: E402
from adastate_core.model.random_weights import random_state_dict  # noqa: E402
from adastate_core.stream import StreamConfig, denoise_chunk, init_stream, update_state  # noqa: E402

MID = WanConfig(
    dim=256, ffn_dim=1024, num_heads=2, num_layers=4, freq_dim=64, text_dim=64, text_len=32
)


def comfy_tree(cfg: WanConfig, weights: dict, dtype: torch.dtype, device: str):
    """ComfyUI's own WanModel (COMFYUI_DIR on sys.path), weights loaded, as its loader builds
    it: storage `dtype`, computed in `dtype` (disable_weight_init ops)."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        raise SystemExit("--comfyui needs COMFYUI_DIR (and ComfyUI's Python environment)")
    sys.path.insert(0, comfy_dir)
    sys.argv = sys.argv[:1] + (["--cpu"] if device == "cpu" else [])  # comfy's CLI args
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    tree = WanModel(
        model_type="t2v", patch_size=cfg.patch_size, text_len=cfg.text_len, in_dim=cfg.in_dim,
        dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim, text_dim=cfg.text_dim,
        out_dim=cfg.out_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
        eps=cfg.eps, device=device, dtype=dtype, operations=comfy.ops.disable_weight_init,
    )  # fmt: skip
    missing, unexpected = tree.load_state_dict(weights, strict=False)
    assert not unexpected and all(".norm1." not in k for k in missing), (missing, unexpected)
    return tree.to(device).eval().requires_grad_(False)


def plain_tree(cfg: WanConfig, weights: dict, dtype: torch.dtype, device: str):
    from comfy_like import comfy_like

    return comfy_like(cfg, weights, dtype).to(device)


def build(cfg: WanConfig, dtype: torch.dtype, device: str, comfyui: bool, seed: int = 0):
    weights = random_state_dict(cfg, seed)
    own = CausalWanDiT(cfg, compute_dtype=dtype)
    own.load_state_dict(weights, strict=True)
    own = own.to(device=device).eval().requires_grad_(False)
    if dtype != torch.float32:
        own.to(dtype)  # weights stored in the compute dtype, as ComfyUI stores them
    tree = (comfy_tree if comfyui else plain_tree)(cfg, weights, dtype, device)
    ext = ExternalWanDiT(tree, compute_dtype=dtype, device=device, config=cfg)
    return own, ext


def steady_state(model, cfg: StreamConfig, chunk: int):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 7, model.config.text_dim, generator=g).to(model.device)
    stream = init_stream(model, cond, cfg)
    for _ in range(chunk):
        stream = update_state(model, stream, denoise_chunk(model, stream))
    return stream


def ab(models: dict, cfg: StreamConfig, repeats: int, sync, chunk: int = 4) -> dict:
    """Median seconds of one steady chunk per model, the models alternated."""
    states = {name: steady_state(m, cfg, chunk) for name, m in models.items()}
    times = {name: [] for name in models}
    names = list(models)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            m, s = models[name], states[name]
            sync()
            start = time.perf_counter()
            update_state(m, s, denoise_chunk(m, s))
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu(args) -> None:
    torch.manual_seed(0)
    cfg = MID
    own, ext = build(cfg, torch.float32, "cpu", args.comfyui)
    scfg = StreamConfig(height=args.height or 128, width=args.width or 192)
    tree = "ComfyUI WanModel" if args.comfyui else "ComfyUI-shaped torch tree"
    print(
        f"mid Wan DiT (dim {cfg.dim}, {cfg.num_layers} layers) fp32 CPU, {scfg.height}x"
        f"{scfg.width} px, C=3 S=1 W=3, 4 steps; external = {tree}; {args.repeats} A/B repeats"
    )
    with torch.inference_mode():
        ab({"own": own, "external": ext}, scfg, 4, lambda: None)  # warm-up
        t = ab({"own": own, "external": ext}, scfg, args.repeats, lambda: None)
    print(
        f"own {t['own'] * 1e3:.1f} ms/chunk | external {t['external'] * 1e3:.1f} ms/chunk | "
        f"ratio external/own {t['external'] / t['own']:.3f}"
    )


def gpu(args) -> None:
    cfg = WanConfig()
    dev = "cuda"
    scfg = StreamConfig(height=args.height or 480, width=args.width or 832)
    name = torch.cuda.get_device_name()
    with torch.inference_mode():
        own, ext = build(cfg, torch.bfloat16, dev, args.comfyui)
        t = ab({"own": own, "external": ext}, scfg, args.repeats, torch.cuda.synchronize)
        fps = {k: 4 * scfg.chunk / v for k, v in t.items()}
        print(
            f"{name}: 1.3B bf16 random weights {scfg.height}x{scfg.width}: own "
            f"{t['own'] * 1e3:.1f} ms/chunk ({fps['own']:.1f} FPS) | external "
            f"{t['external'] * 1e3:.1f} ms/chunk ({fps['external']:.1f} FPS) | ratio "
            f"{t['external'] / t['own']:.3f}"
        )
        # bf16 drift of one denoising call against an fp32 reference of the same weights
        ref, _ = build(cfg, torch.float32, dev, False)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, 16, 3, scfg.height // 8, scfg.width // 8, generator=g).to(dev)
        ctx = torch.randn(1, 64, cfg.text_dim, generator=g).to(dev)
        exact = ref(x, 750.0, ctx)
        for label, m in (("own", own), ("external", ext)):
            out = m(x, 750.0, ctx)
            rel = ((out - exact).norm() / exact.norm()).item()
            print(f"bf16 drift vs fp32, one call at t = 750: {label} {rel:.2e} relative")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--comfyui", action="store_true", help="ComfyUI's WanModel (COMFYUI_DIR)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    args = p.parse_args()
    if args.gpu:
        gpu(args)
    else:
        cpu(args)


if __name__ == "__main__":
    main()
