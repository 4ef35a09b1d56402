"""Per-chunk cost and memory of a stream, side by side for every anchor policy and for a naive
growing cache (Self-Forcing's default: nothing evicted), in one process.

    python benchmarks/stream.py                    # CPU, tiny model, 200 chunks: time ratios
    python benchmarks/stream.py --gpu              # full 1.3B bf16 @480x832, random weights:
                                                   # FPS (DiT only), first-chunk latency, memory

The figure of merit is the chunk-N / chunk-5 time ratio, measured A/B: the stream states
before chunk 5 and before chunk N are immutable values, so one chunk from each is timed in
alternation, many times, in one window (machine noise hits both alike); target <= 1.05 at
N = 200. The chunk-by-chunk early-vs-late medians and the growing cache are shown for contrast.
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
from adastate_core.model.random_weights import TINY, random_model  # noqa: E402
from adastate_core.stream import (  # noqa: E402
    POLICIES,
    StreamConfig,
    denoise_chunk,
    init_stream,
    update_state,
)

GROWING = "growing (no eviction)"


def build_model(cfg: WanConfig, device: str, dtype: torch.dtype) -> CausalWanDiT:
    return random_model(cfg, dtype=dtype, device=device)


def run_streams(model, stream_cfgs: dict[str, StreamConfig], n: int, sync):
    """Seconds and stream bytes for chunks 0..n-1 (denoise + update) of every config, stepped
    in turn chunk by chunk so that machine noise hits them alike."""
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 7, model.config.text_dim, generator=g).to(model.device)
    streams = {name: init_stream(model, cond, cfg) for name, cfg in stream_cfgs.items()}
    times = {name: [] for name in streams}
    sizes = {name: [] for name in streams}
    for _ in range(n):
        for name in streams:
            sync()
            start = time.perf_counter()
            chunk = denoise_chunk(model, streams[name])
            streams[name] = update_state(model, streams[name], chunk)
            sync()
            times[name].append(time.perf_counter() - start)
            sizes[name].append(streams[name].nbytes())
    return times, sizes


def states_at(model, cfg: StreamConfig, indices: list[int]):
    """The (immutable) stream states before each chunk index in `indices`."""
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 7, model.config.text_dim, generator=g).to(model.device)
    stream, out = init_stream(model, cond, cfg), {}
    for k in range(max(indices) + 1):
        if k in indices:
            out[k] = stream
        stream = update_state(model, stream, denoise_chunk(model, stream))
    return out


def ab_ratio(model, cfg: StreamConfig, early: int, late: int, repeats: int, sync) -> dict:
    """Time one chunk (denoise + update) from the state before chunk `early` and from the
    one before chunk `late`, alternated `repeats` times; -> medians and their ratio."""
    states = states_at(model, cfg, [early, late])
    times = {early: [], late: []}
    for i in range(repeats):
        for k in (early, late) if i % 2 == 0 else (late, early):
            sync()
            start = time.perf_counter()
            update_state(model, states[k], denoise_chunk(model, states[k]))
            sync()
            times[k].append(time.perf_counter() - start)
    t_early, t_late = statistics.median(times[early]), statistics.median(times[late])
    return {"early_ms": t_early * 1e3, "late_ms": t_late * 1e3, "ratio": t_late / t_early}


def around(values: list[float], i: int, half: int = 5) -> float:
    lo, hi = max(0, i - half), min(len(values), i + half + 1)
    return statistics.median(values[lo:hi])


def configs(base: dict) -> dict[str, StreamConfig]:
    out = {p: StreamConfig(**base, policy=p) for p in POLICIES}
    out[GROWING] = StreamConfig(**base, policy="none", window=10**9)
    return out


MID = WanConfig(
    dim=256, ffn_dim=1024, num_heads=2, num_layers=4, freq_dim=64, text_dim=64, text_len=32
)


def cpu(args) -> None:
    torch.manual_seed(0)
    arch = TINY if args.size == "tiny" else MID
    model = build_model(arch, "cpu", torch.float32)
    base = {"height": args.height or 64, "width": args.width or 96}
    n = args.chunks
    print(
        f"{args.size} Wan DiT (dim {arch.dim}, {arch.num_layers} layers) fp32 CPU, "
        f"{base['height']}x{base['width']} px, C=3 S=1 W=3, 4 steps, {n} chunks, "
        "policies stepped in turn"
    )
    run_streams(model, {"warm-up": StreamConfig(**base)}, 10, lambda: None)
    flat = configs(base)
    growing = {GROWING: flat.pop(GROWING)}
    # the growing cache runs on its own: stepped in turn with the others, its ever larger
    # tensors slow them down too (cache/allocator pressure), which is not their cost
    times, sizes = run_streams(model, flat, n, lambda: None)
    more_times, more_sizes = run_streams(model, growing, n, lambda: None)
    times.update(more_times)
    sizes.update(more_sizes)
    print(
        f"{'policy':24s} {'ms/chunk@5':>10s} {'@' + str(n):>9s} {'ratio':>6s} "
        f"{'MiB@5':>8s} {'MiB@' + str(n):>8s}"
    )
    for name in times:
        t5, tn = around(times[name], 5), around(times[name], n - 1)
        print(
            f"{name:24s} {t5 * 1e3:10.2f} {tn * 1e3:9.2f} {tn / t5:6.3f} "
            f"{sizes[name][5] / 2**20:8.3f} {sizes[name][n - 1] / 2**20:8.3f}"
        )
    print(f"A/B: one chunk from the chunk-5 and the chunk-{n - 1} states, alternated:")
    for name, cfg in flat.items():
        ab = ab_ratio(model, cfg, 5, n - 1, args.repeats, lambda: None)
        print(f"{name:24s} {ab['early_ms']:10.2f} {ab['late_ms']:9.2f} {ab['ratio']:6.3f}  (A/B)")


def gpu(args) -> None:
    model = build_model(WanConfig(), "cuda", torch.bfloat16)
    base = {"height": args.height or 480, "width": args.width or 832}
    n = args.chunks
    print(
        f"{torch.cuda.get_device_name()}: Wan2.1-1.3B bf16 random weights, "
        f"{base['height']}x{base['width']}, C=3 S=1 W=3, 4 steps, DiT only, {n} chunks"
    )
    for name, cfg in configs(base).items():
        cfg_n = min(n, 30) if name == GROWING else n  # a growing cache: its trend only
        torch.cuda.reset_peak_memory_stats()
        times, sizes = run_streams(model, {name: cfg}, cfg_n, torch.cuda.synchronize)
        times, sizes = times[name], sizes[name]
        steady = statistics.median(times[5:]) if cfg_n > 6 else times[-1]
        print(
            f"{name:24s} first chunk {times[0] * 1e3:7.1f} ms | steady {steady * 1e3:7.1f} "
            f"ms/chunk = {4 * cfg.chunk / steady:5.1f} FPS | chunk {cfg_n - 1}/chunk 5 time "
            f"{around(times, cfg_n - 1) / around(times, 5):.3f} | stream "
            f"{sizes[-1] / 2**30:.2f} GiB | peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        )
        if name != GROWING:
            ab = ab_ratio(model, cfg, 5, n - 1, args.repeats, torch.cuda.synchronize)
            print(f"{'':24s} A/B chunk {n - 1}/chunk 5 time {ab['ratio']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--chunks", type=int, default=200)
    p.add_argument("--repeats", type=int, default=15, help="A/B alternations")
    p.add_argument("--size", choices=["tiny", "mid"], default="tiny", help="CPU model size")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    args = p.parse_args()
    if args.gpu:
        gpu(args)
    else:
        cpu(args)


if __name__ == "__main__":
    main()
