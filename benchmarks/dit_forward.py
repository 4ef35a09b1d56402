"""DiT forward speed: ours vs diffusers' WanTransformer3DModel, same config, weights and input,
timed alternately in one process (CPU: ratio), or one AdaState step on a GPU (ms, TFLOP/s).

    python benchmarks/dit_forward.py                 # CPU, mid-size config, ratio vs diffusers
    python benchmarks/dit_forward.py --gpu           # full 1.3B bf16, 4 live frames @480x832
                                                     # attending to an 8-frame window
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adastate_core.model import CausalWanDiT, WanConfig  # noqa: E402
from adastate_core.model.random_weights import random_model, random_state_dict  # noqa: E402


def forward_flops(cfg: WanConfig, live_tokens: int, key_tokens: int, with_text_kv: bool) -> float:
    """Multiply-add FLOPs (x2) of one forward: projections, attention, FFN, head."""
    d, n = cfg.dim, live_tokens
    per_layer = (
        2 * n * d * d * 4  # self q, k, v, o
        + 2 * 2 * n * key_tokens * d  # QK^T and PV
        + 2 * n * d * d * 2  # cross q, o
        + 2 * 2 * n * cfg.text_len * d  # cross attention
        + 2 * 2 * n * d * cfg.ffn_dim  # FFN
        + (2 * cfg.text_len * d * d * 2 if with_text_kv else 0)  # cross k, v of the prompt
    )
    return cfg.num_layers * per_layer + 2 * n * d * cfg.patch_channels


def _time(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def cpu_ratio(args) -> None:
    from diffusers import WanTransformer3DModel

    torch.set_num_threads(args.threads or torch.get_num_threads())
    cfg = WanConfig(
        dim=args.dim,
        ffn_dim=args.dim * 4,
        num_heads=args.dim // 128,
        num_layers=args.layers,
        text_len=512,
    )
    sd = random_state_dict(cfg, seed=0)
    ours = CausalWanDiT(cfg)
    ours.load_state_dict(sd)
    ours.eval().requires_grad_(False)
    ref = (
        WanTransformer3DModel(
            num_attention_heads=cfg.num_heads,
            attention_head_dim=128,
            ffn_dim=cfg.ffn_dim,
            num_layers=cfg.num_layers,
            text_dim=cfg.text_dim,
            freq_dim=cfg.freq_dim,
        )
        .eval()
        .requires_grad_(False)
    )
    from adastate_core.model.formats import DIFFUSERS_RENAMES  # noqa: F401  (same weights below)

    ref_sd = ref.state_dict()
    for k in ref_sd:  # copy our weights into diffusers' layout through our own key mapping
        from adastate_core.model.formats import diffusers_to_canonical

        ref_sd[k] = sd[diffusers_to_canonical(k)]
    ref.load_state_dict(ref_sd)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, args.frames, args.height // 8, args.width // 8, generator=g)
    ctx = torch.randn(1, 512, cfg.text_dim, generator=g)
    t = torch.tensor([750.0])
    run_ours = lambda: ours(x, t, ctx)
    run_ref = lambda: ref(x, t, ctx, return_dict=False)[0]
    with torch.inference_mode():
        err = (run_ours() - run_ref()).abs().max().item()
        for _ in range(args.warmup):
            run_ours(), run_ref()
        t_ours, t_ref = [], []
        for _ in range(args.repeats):
            t_ours.append(_time(run_ours, lambda: None))
            t_ref.append(_time(run_ref, lambda: None))
    tokens = args.frames * (args.height // 16) * (args.width // 16)
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    print(
        f"config: dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_heads} heads, ffn {cfg.ffn_dim}; "
        f"input {args.frames} latent frames of {args.height}x{args.width} px = {tokens} tokens; "
        f"{torch.get_num_threads()} threads; fp32 CPU; max |ours - diffusers| = {err:.2e}"
    )
    print(f"ours     median {mo * 1e3:8.1f} ms  (min {min(t_ours) * 1e3:.1f})")
    print(f"diffusers median {mr * 1e3:8.1f} ms  (min {min(t_ref) * 1e3:.1f})")
    print(f"ratio ours/diffusers = {mo / mr:.3f}  (median of {args.repeats} alternated runs)")


def adastate_step(args, device: str = "cuda", cfg: WanConfig | None = None) -> dict:
    """One AdaState denoising step: 4 live latent frames (1 state + 3 content) attending to an
    8-frame window (4 cached + 4 live), full 1.3B in bf16 unless `cfg` is given."""
    dev = torch.device(device)
    cfg = cfg or WanConfig()
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = random_model(cfg, dtype=dtype, device=device, attention=args.attention)
    h, w = args.height // 8, args.width // 8
    n_tok = (h // 2) * (w // 2)
    live, cached = 4, 4
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, 16, live, h, w, generator=g, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        ctx = model.encode_context(
            torch.randn(1, cfg.text_len, cfg.text_dim, generator=g, device=dev)
        )
        window = torch.randn(1, 16, cached, h, w, generator=g, device=dev)
        kv = model.cache_kv(window, ctx)
        t = torch.full((1, live), 937.5, device=dev)
        step = lambda: model(x, t, ctx, cache=[kv])
        for _ in range(args.warmup):
            step()
        times = [_time(step, sync) for _ in range(args.repeats)]
    ms = statistics.median(times) * 1e3
    flops = forward_flops(cfg, live * n_tok, (live + cached) * n_tok, with_text_kv=False)
    result = {
        "ms": ms,
        "tflops": flops / (ms / 1e3) / 1e12,
        "tflop": flops / 1e12,
        "tokens": live * n_tok,
        "keys": (live + cached) * n_tok,
    }
    if dev.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"{torch.cuda.get_device_name()}: Wan2.1-1.3B bf16 ({args.attention}), {live} live "
            f"frames @{args.height}x{args.width} ({result['tokens']} tokens) over "
            f"{live + cached} frames of keys"
        )
        print(
            f"median {ms:.2f} ms per forward, {result['tflops']:.1f} TFLOP/s "
            f"({result['tflop']:.2f} TFLOP), peak memory {result['peak_gib']:.2f} GiB"
        )
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true", help="full 1.3B bf16 AdaState step on CUDA")
    p.add_argument("--attention", default="sdpa", choices=["sdpa", "sageattention"])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.gpu:
        args.height, args.width = args.height or 480, args.width or 832
        args.repeats = args.repeats or 20
        adastate_step(args)
    else:
        args.height, args.width = args.height or 240, args.width or 416
        args.repeats = args.repeats or 7
        cpu_ratio(args)


if __name__ == "__main__":
    main()
