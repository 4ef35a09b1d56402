"""VAE decode speed: our streamed decoder (chunks of 3 latents, cache kept) vs diffusers'
AutoencoderKLWan one-shot decode of the same latents and weights, timed alternately in one
process (CPU: ratio), or the full-size decoder streaming on a GPU (ms per chunk, frames/s).

    python benchmarks/decode.py            # CPU, base dim 32 at 128x128, 7 latents
    python benchmarks/decode.py --gpu      # dim 96 (the real VAE) bf16 at 480x832 on CUDA
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adastate_core.vae import WanVAEDecoder, estimate_cache_bytes, load_vae  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict, randomise_  # noqa: E402


def build_pair(dim: int, seed: int = 0):
    """(ours, diffusers) with the same random weights: diffusers' are randomised, ours are read
    from its state dict through our loader."""
    from diffusers import AutoencoderKLWan

    ref = AutoencoderKLWan(base_dim=dim, z_dim=16).eval().requires_grad_(False)
    randomise_(ref, seed)
    return load_vae(ref.state_dict(), dtype=torch.float32), ref


def stream_decode(
    model: WanVAEDecoder, z: Tensor, chunk: int = 3, normalised: bool = False
) -> list[Tensor]:
    """Decode z [B, 16, F, h, w] chunk by chunk with the cache kept; the videos per chunk."""
    cache, videos = None, []
    for start in range(0, z.shape[2], chunk):
        video, cache = model.decode_chunk(
            z[:, :, start : start + chunk], cache, normalised=normalised, clamp=False
        )
        videos.append(video)
    return videos


def _time(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def compare(ours: WanVAEDecoder, ref, z_raw: Tensor, repeats: int, warmup: int = 1) -> dict:
    """Alternate our streamed decode and diffusers' one-shot decode of raw latents z_raw."""
    run_ours = lambda: torch.cat(stream_decode(ours, z_raw), dim=2).clamp(-1, 1)
    run_ref = lambda: ref.decode(z_raw).sample  # diffusers clamps to [-1, 1]
    with torch.no_grad():
        err = (run_ours() - run_ref()).abs().max().item()
        for _ in range(warmup):
            run_ours(), run_ref()
        t_ours, t_ref = [], []
        for _ in range(repeats):
            t_ours.append(_time(run_ours, lambda: None))
            t_ref.append(_time(run_ref, lambda: None))
    mo, mr = statistics.median(t_ours), statistics.median(t_ref)
    return {"ms_ours": mo * 1e3, "ms_ref": mr * 1e3, "ratio": mo / mr, "max_err": err}


def cpu_ratio(args) -> None:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    ours, ref = build_pair(args.dim)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 16, args.latents, args.height // 8, args.width // 8, generator=g)
    r = compare(ours, ref, ours.denormalise(z), args.repeats, args.warmup)
    frames = 1 + 4 * (args.latents - 1)
    print(
        f"config: base dim {args.dim}, {args.latents} latents -> {frames} frames of "
        f"{args.height}x{args.width}; ours streamed in chunks of 3 (cache kept), diffusers "
        f"one-shot; {torch.get_num_threads()} threads; fp32 CPU; max |ours - diffusers| = "
        f"{r['max_err']:.2e}"
    )
    print(f"ours      median {r['ms_ours']:8.1f} ms")
    print(f"diffusers median {r['ms_ref']:8.1f} ms")
    print(f"ratio ours/diffusers = {r['ratio']:.3f}  (median of {args.repeats} alternated runs)")


def stream_speed(
    dim: int = 96,
    height: int = 480,
    width: int = 832,
    chunks: int = 6,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "cuda",
) -> dict:
    """Stream `chunks` chunks of 3 latents through a random decoder of base `dim`: ms of the
    first chunk (9 frames) and median ms of the later ones (12 frames each), frames/s."""
    dev = torch.device(device)
    model = load_vae(random_state_dict(dim), dtype=dtype, device=dev)
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.randn(1, 16, 3 * chunks, height // 8, width // 8, generator=g, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, frames, cache = [], [], None
    for c in range(chunks):
        start = time.perf_counter()
        video, cache = model.decode_chunk(z[:, :, 3 * c : 3 * c + 3], cache)
        sync()
        times.append(time.perf_counter() - start)
        frames.append(video.shape[2])
    later = statistics.median(times[1:]) if chunks > 1 else times[0]
    result = {
        "first_ms": times[0] * 1e3,
        "chunk_ms": later * 1e3,
        "fps": (frames[-1] if chunks > 1 else frames[0]) / later,
        "frames": frames,
        "cache_gb": cache.nbytes() / 1e9,
        "cache_estimate_gb": estimate_cache_bytes(height, width, dtype, dim=dim) / 1e9,
    }
    if dev.type == "cuda":
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def gpu(args) -> None:
    r = stream_speed(args.dim, args.height, args.width, args.chunks, torch.bfloat16, "cuda")
    print(
        f"{torch.cuda.get_device_name()}: Wan2.1 VAE decoder (dim {args.dim}) bf16 at "
        f"{args.height}x{args.width}, chunks of 3 latents, cache kept"
    )
    print(
        f"first chunk {r['first_ms']:.1f} ms ({r['frames'][0]} frames); later chunks median "
        f"{r['chunk_ms']:.1f} ms ({r['frames'][-1]} frames) = {r['fps']:.1f} frames/s"
    )
    print(
        f"cache {r['cache_gb']:.2f} GB (estimate {r['cache_estimate_gb']:.2f} GB), peak memory "
        f"{r['peak_gib']:.2f} GiB"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true", help="full-size bf16 streaming on CUDA")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--latents", type=int, default=7, help="CPU: latent frames decoded")
    p.add_argument("--chunks", type=int, default=6, help="GPU: chunks of 3 latents streamed")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.gpu:
        args.dim, args.height, args.width = args.dim or 96, args.height or 480, args.width or 832
        gpu(args)
    else:
        args.dim, args.height, args.width = args.dim or 32, args.height or 128, args.width or 128
        cpu_ratio(args)


if __name__ == "__main__":
    main()
