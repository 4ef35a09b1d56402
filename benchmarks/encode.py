"""VAE encode speed: our streamed encoder (the first frame, then groups of 4 with the cache
kept) vs diffusers' AutoencoderKLWan.encode of the same frames and weights, timed alternately
in one process (CPU: ratio, target <= 1.1), or the full-size encoder on a GPU (ms per 4
frames, frames/s, peak memory).

    python benchmarks/encode.py            # CPU, base dim 32 at 128x128, 17 frames
    python benchmarks/encode.py --gpu      # dim 96 (the real VAE) bf16 at 480x832 on CUDA
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adastate_core.vae import load_vae_encoder  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict, randomise_  # noqa: E402


def build_pair(dim: int, seed: int = 0):
    """(ours, diffusers) with the same random weights, ours read through our loader."""
    from diffusers import AutoencoderKLWan

    ref = AutoencoderKLWan(base_dim=dim, z_dim=16).eval().requires_grad_(False)
    randomise_(ref, seed)
    return load_vae_encoder(ref.state_dict(), dtype=torch.float32), ref


def compare(ours, ref, video: torch.Tensor, repeats: int, warmup: int = 1) -> dict:
    """Alternate our encode (raw means) and diffusers' posterior mean of the same video."""

    def run_ours():
        return ours.encode(video, normalise=False)

    def run_ref():
        return ref.encode(video).latent_dist.mean

    with torch.no_grad():
        err = (run_ours() - run_ref()).abs().max().item()
        for _ in range(warmup):
            run_ours(), run_ref()
        t_ours, t_ref = [], []
        for i in range(repeats):
            for name, fn in (("ours", run_ours), ("ref", run_ref))[:: 1 if i % 2 == 0 else -1]:
                start = time.perf_counter()
                fn()
                (t_ours if name == "ours" else t_ref).append(time.perf_counter() - start)
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    return {"ms_ours": mo * 1e3, "ms_ref": mr * 1e3, "ratio": mo / mr, "max_err": err}


def cpu_ratio(args) -> None:
    ours, ref = build_pair(args.dim)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, args.frames, args.height, args.width, generator=g) * 2 - 1
    r = compare(ours, ref, video, args.repeats, args.warmup)
    print(
        f"config: base dim {args.dim}, {args.frames} frames of {args.height}x{args.width} -> "
        f"{1 + (args.frames - 1) // 4} latents; {torch.get_num_threads()} threads; fp32 CPU; "
        f"max |ours - diffusers| = {r['max_err']:.2e}"
    )
    print(f"ours      median {r['ms_ours']:8.1f} ms")
    print(f"diffusers median {r['ms_ref']:8.1f} ms")
    print(f"ratio ours/diffusers = {r['ratio']:.3f}  (median of {args.repeats} alternated runs)")


def gpu(args) -> None:
    dev = torch.device("cuda")
    enc = load_vae_encoder(random_state_dict(96, encoder=True), dtype=torch.bfloat16, device=dev)
    frames = 1 + 4 * args.groups
    video = torch.rand(1, 3, frames, args.height or 480, args.width or 832, device=dev) * 2 - 1
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        enc.encode_chunk(video[:, :, :5])  # warm-up
        torch.cuda.synchronize()
        cache, times = None, []
        lat, cache = enc.encode_chunk(video[:, :, :1])
        for i in range(args.groups):
            torch.cuda.synchronize()
            start = time.perf_counter()
            lat, cache = enc.encode_chunk(video[:, :, 1 + 4 * i : 5 + 4 * i], cache)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    print(
        f"{torch.cuda.get_device_name()}: Wan2.1 VAE encoder (dim 96) bf16 at "
        f"{video.shape[3]}x{video.shape[4]}: {ms:.1f} ms per 4 frames = {4000 / ms:.1f} "
        f"frames/s; peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--groups", type=int, default=10, help="GPU: groups of 4 frames timed")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    if args.gpu:
        gpu(args)
    else:
        cpu_ratio(args)


if __name__ == "__main__":
    main()
