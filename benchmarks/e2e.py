"""End to end: prompt rows -> DiT -> VAE -> uint8 -> writer thread -> MP4 on disk, timed the way
a user sees it (`pipeline.generate`, the code path of the `adastate` CLI).

    python benchmarks/e2e.py --gpu --phases --profile --json e2e.json   # the one device run
    python benchmarks/e2e.py --gpu --quick                              # ~10 chunks
    python benchmarks/e2e.py --cpu                                      # CI: code paths only

--gpu: Wan2.1-1.3B (WanConfig()) random weights drawn on the device in bf16 through the real
loader, the full VAE decoder (dim 96) in bf16, 480x832, adaptive policy (C=3 S=1 W=3, 4
steps), 64 random prompt rows (no text encoder), 65 chunks written to a real MP4 in a temporary
folder (libx264 `--preset`, crf 19). About 2-4 minutes on an H100/H200 (the 65-chunk run is
~1 min of it). CPU mode (the default without CUDA, or --cpu): the same harness on the tiny DiT,
VAE dim 8, 64x96, fp32, 8 chunks: its timings mean nothing, it only keeps the code paths
working.

Order of the run (every part after the first reuses the same loaded weights):
1. load: random weights through `load_dit` / `load_vae`.
2. warm-up run (--warmup chunks, own file): `cold_start_s` = weights ready (synced) -> its first
   chunk on disk (init_stream + prompt K/V + the first DiT/VAE calls with cuDNN/cuBLAS/
   allocator warm-up + the first encode).
3. first-frame repeats (--ff-repeats one-chunk runs, each a fresh stream and file, warm).
4. the main run (--chunks, own file): first frame, sustained FPS, per-phase times (--phases),
   memory.
5. sync audit: --audit-chunks more chunks continuing the main stream (steady state) with
   `torch.cuda.set_sync_debug_mode("warn")`, warnings counted by source line.
6. profile (--profile): --profile-chunks more steady chunks under `torch.profiler`; the top
   15 device kernels by time, the attention kernel(s) actually run.
Every figure is explained in `FIGURES` (printed with the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adastate_core import pipeline  # noqa: E402
from adastate_core.io import count_frames, open_writer  # noqa: E402
from adastate_core.model import CausalWanDiT, WanConfig  # noqa: E402
from adastate_core.model.attention import BACKENDS  # noqa: E402
from adastate_core.model.loader import load_dit  # noqa: E402
from adastate_core.model.random_weights import TINY, random_state_dict  # noqa: E402
from adastate_core.stream import FPS, StreamConfig, init_stream  # noqa: E402
from adastate_core.stream import iterate as stream_iterate  # noqa: E402
from adastate_core.vae import load_vae  # noqa: E402
from adastate_core.vae.random_weights import random_state_dict as vae_state_dict  # noqa: E402

GIB = 2**30
TARGET_GB = 10.0  # issue 11's device-memory target (GB = 1e9 bytes)
PHASES = ("denoise", "decode", "uint8", "d2h", "update")
TOP_KERNELS = 15
ATTENTION_KERNEL = re.compile(r"flash|fmha|cudnn|attention|attn|sdpa|efficient|sage", re.I)
CPU_NOTE = (
    "CPU mode: tiny DiT and VAE, fp32, no CUDA. The timings are meaningless; this run only "
    "exercises the harness (phases with perf_counter, no memory figures, the sync audit runs "
    "without sync debug mode)."
)
FIGURES = {
    "load_s": "random weights drawn and loaded through the real loaders (device synced)",
    "cold_start_s": "weights ready -> the warm-up run's first chunk on disk (first on_chunk): "
    "init_stream + chunk 0 with every lazy init (cuBLAS/cuDNN handles, autotuning, allocator "
    "growth) + the first encode; never mixed into the warm figures",
    "first_frame_s": "main run: generate() called -> first on_chunk (chunk 0's 9 frames are on "
    "disk, fsync'ed); the stream was made before the call",
    "first_frame_on_host_s": "main run: generate() called -> the writer thread receives chunk "
    "0's uint8 frames on the host (D2H done, before encoding)",
    "write_ms_steady_median": "writer thread, chunks N..end, median: writer.write = x264 encode "
    "+ append + fsync of one chunk (off the critical path while shorter than a chunk)",
    "first_frame_repeat_median_s": "the same, median over --ff-repeats one-chunk runs, each "
    "from a fresh stream; *_incl_init adds init_stream (prompt K/V) before generate()",
    "sustained_fps": "frames of chunks N..end / (on-disk time of the last chunk - on-disk time "
    "of chunk N-1), N = --steady-from (5): what the file grows by per second, end to end",
    "steady_chunk_ms": "median interval between consecutive chunks reaching the disk, chunks "
    "N..end; fps_from_median = 12 frames / that",
    "flatness": "median interval of the last 10 chunks / of chunks N..N+9 (halves if fewer "
    "than 20): 1.0 = no slowdown over the stream",
    "phases": "per chunk, chunks N..end, median: CUDA event pairs (GPU timeline, read after "
    "the run) around stream_chunks' denoise_chunk (4 DiT calls) and update_state (the t = 0 "
    "pass), vae.decode_chunk, frames_uint8 (uint8 on the device) and to_host (the pinned "
    "non-blocking D2H); host = perf_counter around the same calls (enqueue time on the GPU). "
    "The rest of a chunk's interval is host/GPU idle, noise H2D and glue",
    "memory": "max_memory_allocated / max_memory_reserved over the main run (peak stats reset "
    "after the warm-up, weights included); device_used = total - free from mem_get_info "
    "(context, workspaces, every process on the device), sampled after each chunk and at the "
    "end; outside_allocator = device_used_end - memory_reserved at the end (CUDA context, "
    "cuDNN/cuBLAS outside the caching allocator, other processes); device_peak_estimate = "
    "max_memory_reserved + outside_allocator",
    "sync_audit": "host<->device synchronisations torch reports in sync debug mode during "
    "--audit-chunks steady chunks (main thread and writer thread; the writer thread's are off "
    "the critical path), by innermost Python source line",
    "profile": "torch.profiler over --profile-chunks steady chunks: device kernels by total "
    "self time; busy = their sum / wall time of those chunks",
}


# ----------------------------------------------------------------------------------------------
# options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", action="store_true", help="full size on CUDA (error without)")
    where.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (CI)")
    p.add_argument("--quick", action="store_true", help="10 chunks (CPU: 6) instead of 65 (8)")
    p.add_argument("--chunks", type=int, default=None, help="main run length (65; CPU 8)")
    p.add_argument("--steady-from", type=int, default=5, help="first chunk of the steady window")
    p.add_argument("--warmup", type=int, default=3, help="chunks of the warm-up run (>= 1)")
    p.add_argument("--ff-repeats", type=int, default=3, help="one-chunk first-frame runs")
    p.add_argument("--audit-chunks", type=int, default=2, help="sync audit chunks (0: none)")
    p.add_argument("--profile", action="store_true", help="torch.profiler top kernels")
    p.add_argument("--profile-chunks", type=int, default=2)
    p.add_argument("--phases", action="store_true", help="per-phase CUDA event timing")
    p.add_argument("--attention", choices=BACKENDS, default="sdpa")
    p.add_argument("--residual", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--preset", default="medium", help="libx264 preset of the MP4 writer")
    p.add_argument("--crf", type=int, default=19)
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark")
    p.add_argument("--height", type=int, default=None, help="480 (CPU 64)")
    p.add_argument("--width", type=int, default=None, help="832 (CPU 96)")
    p.add_argument("--vae-dim", type=int, default=None, help="VAE base dim: 96 (CPU 8)")
    p.add_argument("--prompt-rows", type=int, default=64, help="random prompt rows (tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=None, help="keep the videos here (default: temporary)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> dict:
    """The concrete settings of this run (mode-dependent defaults filled in)."""
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("e2e.py --gpu: CUDA is not available on this machine")
    gpu = args.gpu or (not args.cpu and torch.cuda.is_available())
    chunks = args.chunks or ((10 if args.quick else 65) if gpu else (6 if args.quick else 8))
    if chunks < 2:
        raise SystemExit("--chunks must be >= 2 (a steady window needs a chunk before it)")
    return {
        "mode": "gpu" if gpu else "cpu",
        "device": "cuda" if gpu else "cpu",
        "dtype": torch.bfloat16 if gpu else torch.float32,
        "dit": WanConfig() if gpu else TINY,
        "vae_dim": args.vae_dim or (96 if gpu else 8),
        "height": args.height or (480 if gpu else 64),
        "width": args.width or (832 if gpu else 96),
        "chunks": chunks,
        # at least one chunk before the window (its on-disk time starts the clock)
        "steady_from": max(1, min(args.steady_from, chunks - 1)),
        "warmup": max(1, args.warmup),
    }


# ----------------------------------------------------------------------------------------------
# building


def random_dit(
    config: WanConfig, device: str, dtype: torch.dtype, residual: str, attention: str, seed: int
) -> CausalWanDiT:
    """A random-weight DiT through the real loader (residual: "fp32" or "bf16", the CLI's
    --residual), every tensor drawn directly on `device` in `dtype` as benchmarks/train_step.py
    does (drawing 1.3B values on the host and copying them over costs ~30 s of device time);
    the values follow random_weights.random_state_dict's rule."""
    state = random_state_dict(config, seed, dtype, device, draw_on_device=True)
    return load_dit(
        state,
        dtype=dtype,
        precise_dtype=residual,  # "fp32" / "bf16", as the CLI's --residual
        device=device,
        attention=attention,
        num_heads=config.num_heads,
        text_len=config.text_len,
        eps=config.eps,
    )


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------------
# measuring


class ChunkLog:
    """`on_chunk` callback (runs in the writer thread once a chunk is on disk)."""

    def __init__(self, sample_memory: bool = False):
        self.sample_memory = sample_memory
        self.index: list[int] = []
        self.done: list[float] = []  # perf_counter when the chunk was reported on disk
        self.elapsed: list[float] = []  # seconds since generate() started (ChunkReport)
        self.frames: list[int] = []  # frames in the file after the chunk
        self.device_used: list[int] = []  # bytes, total - free, after each chunk (CUDA)
        self.start = 0.0  # perf_counter when generate() was called
        self.write_begin: list[float] = []  # perf_counter when writer.write got the frames
        self.write_s: list[float] = []  # seconds in writer.write (encode + append + fsync)

    def __call__(self, report: pipeline.ChunkReport) -> None:
        self.done.append(time.perf_counter())
        self.index.append(report.index)
        self.elapsed.append(report.elapsed)
        self.frames.append(report.frames_written)
        if self.sample_memory:
            with contextlib.suppress(Exception):  # a figure, never a reason to fail the run
                free, total = torch.cuda.mem_get_info()
                self.device_used.append(total - free)


class TimedWriter:
    """The video writer as `generate` sees it (it only calls `write`, from the writer thread),
    timing each write: entry = the chunk's uint8 frames are on the host."""

    def __init__(self, writer, log: ChunkLog):
        self.writer, self.log = writer, log

    def write(self, frames) -> None:
        begin = time.perf_counter()
        self.log.write_begin.append(begin)
        self.writer.write(frames)
        self.log.write_s.append(time.perf_counter() - begin)


def write_run(model, vae, stream, total_chunks: int, path: Path, args, *, vae_cache=None,
              sample_memory: bool = False):  # fmt: skip
    """`pipeline.generate` into a new MP4 at `path` -> (RunResult, ChunkLog)."""
    log = ChunkLog(sample_memory)
    with open_writer(path, fps=FPS, crf=args.crf, preset=args.preset, exclusive=True) as writer:
        log.start = time.perf_counter()
        result = pipeline.generate(
            model, vae, stream, TimedWriter(writer, log), total_chunks=total_chunks,
            vae_cache=vae_cache, on_chunk=log,
        )  # fmt: skip
    return result, log


def sustained(log: ChunkLog, first: int) -> dict:
    """FPS over chunks first..end from the on-disk times; interval statistics."""
    done, frames = log.done, log.frames
    n = len(done)
    first = max(1, min(first, n - 1))
    seconds = done[-1] - done[first - 1]
    count = frames[-1] - frames[first - 1]
    gaps = [b - a for a, b in zip(done[first - 1 :], done[first:])]  # chunk k: done[k]-done[k-1]
    median = statistics.median(gaps)
    if len(gaps) >= 20:
        early, late = gaps[:10], gaps[-10:]
    else:
        half = len(gaps) // 2
        early, late = gaps[:half], gaps[-half:] if half else []
    flat = statistics.median(late) / statistics.median(early) if early and late else None
    fps = count / seconds if seconds > 0 else float("nan")
    return {
        "from_chunk": first,
        "chunks": n - first,
        "frames": count,
        "seconds": seconds,
        "fps": fps,
        "realtime_x": fps / FPS,
        "steady_chunk_ms": median * 1e3,
        "fps_from_median": (frames[-1] - frames[-2]) / median if median > 0 else float("nan"),
        "flatness": flat,
    }


class Phases:
    """Times the pipeline's phases by wrapping the functions it calls (module globals of
    `stream.iterate` and `pipeline`, and the VAE instance's decode_chunk): CUDA event pairs
    on CUDA (no sync until `summary`), perf_counter on the CPU; host time in both."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.events: dict[str, list] = {name: [] for name in PHASES}
        self.host: dict[str, list[float]] = {name: [] for name in PHASES}

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = torch.cuda.Event(enable_timing=True) if self.cuda else None
            if start is not None:
                start.record()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                if start is not None:
                    end = torch.cuda.Event(enable_timing=True)
                    end.record()
                    self.events[name].append((start, end))
                else:
                    self.events[name].append(t1 - t0)
                self.host[name].append(t1 - t0)

        return timed

    @contextlib.contextmanager
    def installed(self, vae):
        targets = [
            (stream_iterate, "denoise_chunk", "denoise"),
            (stream_iterate, "update_state", "update"),
            (pipeline, "frames_uint8", "uint8"),
            (pipeline, "to_host", "d2h"),
        ]
        saved = [(module, attr, getattr(module, attr)) for module, attr, _ in targets]
        try:
            for module, attr, name in targets:
                setattr(module, attr, self.wrap(name, getattr(module, attr)))
            vae.decode_chunk = self.wrap("decode", vae.decode_chunk)
            yield self
        finally:
            for module, attr, fn in saved:
                setattr(module, attr, fn)
            vae.__dict__.pop("decode_chunk", None)

    def summary(self, first: int) -> dict:
        """Per phase: calls, total ms, median ms per call over calls first.. (call k = chunk k:
        each phase runs once per chunk). Synchronises the device first."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict = {"timer": "cuda events" if self.cuda else "perf_counter"}
        steady_sum = 0.0
        for name in PHASES:
            ms = [(e[0].elapsed_time(e[1]) if self.cuda else e * 1e3) for e in self.events[name]]
            host = [t * 1e3 for t in self.host[name]]
            steady = ms[first:] or ms
            med = statistics.median(steady) if steady else float("nan")
            steady_sum += med if steady else 0.0
            out[name] = {
                "calls": len(ms),
                "total_ms": sum(ms),
                "steady_median_ms": med,
                "host_steady_median_ms": statistics.median(host[first:] or host)
                if host
                else float("nan"),
            }
        out["steady_sum_ms"] = steady_sum
        return out


def audit_syncs(model, vae, stream, cache, chunks: int, path: Path, args, cuda: bool):
    """Continue the stream for `chunks` chunks in sync debug mode; warnings by source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            result, _ = write_run(
                model, vae, stream, stream.chunk_index + chunks, path, args, vae_cache=cache
            )
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
    sites, other = count_sync_warnings(caught)
    total = sum(sites.values())
    audit = {
        "enabled": cuda,
        "chunks": chunks,
        "total": total,
        "per_chunk": total / chunks,
        "sites": dict(sites.most_common()),
        "other_warnings": dict(other.most_common()),
    }
    return audit, result


def count_sync_warnings(caught) -> tuple[Counter, Counter]:
    """Recorded warnings -> (sync-debug warnings by "file:line", other warnings by site and
    message)."""
    sites: Counter = Counter()
    other: Counter = Counter()
    for w in caught:
        site = f"{_short(w.filename)}:{w.lineno}"
        if "synchroniz" in str(w.message).lower():
            sites[site] += 1
        else:
            other[f"{site}: {str(w.message)[:80]}"] += 1
    return sites, other


def profile_chunks(model, vae, stream, cache, chunks: int, path: Path, args, cuda: bool):
    """torch.profiler over `chunks` steady chunks: top device kernels (CPU: top CPU ops)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        result, _ = write_run(
            model, vae, stream, stream.chunk_index + chunks, path, args, vae_cache=cache
        )
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    if cuda:
        kernels = [e for e in events if getattr(e, "device_type", None) == DeviceType.CUDA]
        time_of = lambda e: e.self_device_time_total  # noqa: E731
    else:
        kernels = list(events)
        time_of = lambda e: e.self_cpu_time_total  # noqa: E731
    kernels.sort(key=time_of, reverse=True)
    total_us = sum(time_of(e) for e in kernels)
    top = [
        {
            "name": e.key,
            "calls": e.count,
            "ms": time_of(e) / 1e3,
            "share": time_of(e) / total_us if total_us else 0.0,
        }
        for e in kernels[:TOP_KERNELS]
    ]
    attention = sorted({e.key for e in kernels if ATTENTION_KERNEL.search(e.key)})
    report = {
        "what": "CUDA kernels (self device time)" if cuda else "CPU ops (self CPU time)",
        "chunks": chunks,
        "wall_s": wall,
        "kernel_ms": total_us / 1e3,
        "busy": (total_us / 1e6) / wall if wall > 0 else float("nan"),
        "kernels": len(kernels),
        "top": top,
        "attention_kernels": attention,
    }
    return report, result


def _short(filename: str) -> str:
    path = Path(filename)
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO))
    parts = path.parts
    return str(Path(*parts[parts.index("torch") :])) if "torch" in parts else path.name


def environment(settings: dict, args) -> dict:
    import av

    cfg: WanConfig = settings["dit"]
    env = {
        "torch": torch.__version__,
        "av": av.__version__,
        "device": "cpu",
        "model": f"dim {cfg.dim}, {cfg.num_layers} layers, {cfg.num_params() / 1e6:.1f} M params",
        "vae_dim": settings["vae_dim"],
        "size": f"{settings['height']}x{settings['width']}",
        "dtype": str(settings["dtype"]).replace("torch.", ""),
        "residual": args.residual,
        "attention": args.attention,
        "preset": args.preset,
        "crf": args.crf,
        "cudnn_benchmark": args.cudnn_benchmark,
        "prompt_rows": min(args.prompt_rows, cfg.text_len),
        "chunks": settings["chunks"],
        "warmup_chunks": settings["warmup"],
    }
    if settings["device"] == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(
            device=f"{props.name} (sm{props.major}{props.minor}, "
            f"{props.total_memory / GIB:.1f} GiB)",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            sdpa_enabled=",".join(
                name
                for name in ("cudnn", "flash", "mem_efficient", "math")
                if getattr(torch.backends.cuda, f"{name}_sdp_enabled", lambda: False)()
            ),
        )
    return env


# ----------------------------------------------------------------------------------------------
# the run


def run(args: argparse.Namespace) -> dict:
    """Everything measured, as a JSON-ready dict (see FIGURES)."""
    settings = resolve(args)
    device, dtype, cfg = settings["device"], settings["dtype"], settings["dit"]
    cuda = device == "cuda"
    first = settings["steady_from"]
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    out: dict = {"mode": settings["mode"]}
    if not cuda:
        out["note"] = CPU_NOTE
    out["setup"] = environment(settings, args)
    t_begin = time.perf_counter()

    with contextlib.ExitStack() as stack:
        folder = (
            Path(args.out_dir)
            if args.out_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="adastate-e2e-")))
        )
        folder.mkdir(parents=True, exist_ok=True)
        stream_cfg = StreamConfig(
            height=settings["height"], width=settings["width"], policy="adaptive", seed=args.seed
        )
        gen = torch.Generator().manual_seed(args.seed)
        cond = torch.randn(1, min(args.prompt_rows, cfg.text_len), cfg.text_dim, generator=gen)

        # 1. load
        t0 = time.perf_counter()
        model = random_dit(cfg, device, dtype, args.residual, args.attention, args.seed)
        vae_sd = vae_state_dict(dim=settings["vae_dim"], seed=args.seed, dtype=dtype)
        vae = load_vae(vae_sd, dtype=dtype, device=device)
        del vae_sd
        sync(device)
        ready = time.perf_counter()
        out["load_s"] = ready - t0
        weights = torch.cuda.memory_allocated() if cuda else None

        # 2. cold start + warm-up
        # (only the log is kept: no state or decoder cache of these runs stays on the device)
        stream = init_stream(model, cond, stream_cfg)
        log = write_run(model, vae, stream, settings["warmup"], folder / "warmup.mp4", args)[1]
        out["cold_start_s"] = log.done[0] - ready
        out["warmup_chunk_s"] = [log.done[0] - ready] + [
            b - a for a, b in zip(log.done, log.done[1:])
        ]

        # 3. first frame, warm, fresh streams
        ff, ff_init = [], []
        for i in range(max(0, args.ff_repeats)):
            t_init = time.perf_counter()
            stream = init_stream(model, cond, stream_cfg)
            log = write_run(model, vae, stream, 1, folder / f"first_frame_{i}.mp4", args)[1]
            ff.append(log.elapsed[0])
            ff_init.append(log.done[0] - t_init)
        del stream

        # 4. the main run
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        phases = Phases(cuda) if args.phases else None
        main_path = folder / "e2e.mp4"
        with phases.installed(vae) if phases else contextlib.nullcontext():
            t_init = time.perf_counter()
            stream = init_stream(model, cond, stream_cfg)
            init_s = time.perf_counter() - t_init
            result, log = write_run(
                model, vae, stream, settings["chunks"], main_path, args, sample_memory=cuda
            )
            del stream
        sync(device)
        out["first_frame"] = {
            "first_frame_s": log.elapsed[0],
            "first_frame_on_host_s": log.write_begin[0] - log.start,
            "init_stream_s": init_s,
            "first_frame_incl_init_s": log.elapsed[0] + init_s,
            "repeats_s": ff,
            "repeat_median_s": statistics.median(ff) if ff else None,
            "repeat_median_incl_init_s": statistics.median(ff_init) if ff_init else None,
        }
        out["sustained"] = sustained(log, first)
        out["run"] = {
            "chunks": result.chunks,
            "chunks_reported": len(log.done),
            "frames_written": result.frames_written,
            "frames_in_file": count_frames(main_path),
            "seconds": result.seconds,
            "overall_fps": result.frames_written / result.seconds if result.seconds else None,
            "chunk_done_s": log.elapsed,
            "chunk_frames": [b - a for a, b in zip([0, *log.frames], log.frames)],
            # writer thread: encode + append + fsync of one chunk (off the critical path
            # unless it is slower than a chunk)
            "write_ms_steady_median": statistics.median(log.write_s[first:]) * 1e3,
            "video": str(main_path) if args.out_dir else None,
            "stream_state_mib": result.stream.nbytes() / 2**20,
        }
        out["phases"] = phases.summary(first) if phases else None
        if phases:
            out["phases"]["chunk_ms"] = out["sustained"]["steady_chunk_ms"]
        if cuda:
            free, total = torch.cuda.mem_get_info()
            used_end = total - free
            reserved_end = torch.cuda.memory_reserved()
            outside = used_end - reserved_end
            out["memory"] = {
                "weights_gib": weights / GIB,
                "peak_allocated_gib": torch.cuda.max_memory_allocated() / GIB,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB,
                "device_used_end_gib": used_end / GIB,
                "device_used_sampled_max_gib": max(log.device_used, default=0) / GIB,
                "outside_allocator_gib": outside / GIB,
                "device_peak_estimate_gib": (torch.cuda.max_memory_reserved() + outside) / GIB,
                "device_total_gib": total / GIB,
                "target_gb": TARGET_GB,
            }
        else:
            out["memory"] = None

        # 5. sync audit, 6. profile: continuing the main stream (steady chunks)
        stream, cache = result.stream, result.vae_cache
        del result
        out["sync_audit"] = None
        if args.audit_chunks > 0:
            out["sync_audit"], cont = audit_syncs(
                model, vae, stream, cache, args.audit_chunks, folder / "audit.mp4", args, cuda
            )
            stream, cache = cont.stream, cont.vae_cache
        out["profile"] = None
        if args.profile and args.profile_chunks > 0:
            out["profile"], _ = profile_chunks(
                model, vae, stream, cache, args.profile_chunks, folder / "profile.mp4", args, cuda
            )
    out["total_s"] = time.perf_counter() - t_begin
    return out


# ----------------------------------------------------------------------------------------------
# report


def _f(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def table(r: dict) -> str:
    setup = ", ".join(f"{k} {v}" for k, v in r["setup"].items())
    lines = [f"AdaState end to end ({r['mode']}): {setup}"]
    if r.get("note"):
        lines.append(r["note"])
    s, ff, run_ = r["sustained"], r["first_frame"], r["run"]
    lines += [
        f"load                      {r['load_s']:8.2f} s",
        f"cold start (first chunk)  {r['cold_start_s']:8.3f} s   warm-up chunks "
        + ", ".join(f"{t:.3f}" for t in r["warmup_chunk_s"])
        + " s",
        f"first frame on disk       {ff['first_frame_s']:8.3f} s   (on the host "
        f"{ff['first_frame_on_host_s']:.3f} s; + init_stream {ff['init_stream_s']:.3f} s); "
        f"{len(ff['repeats_s'])} repeats: median {_f(ff['repeat_median_s'])} s, incl. init "
        f"{_f(ff['repeat_median_incl_init_s'])} s",
        f"sustained, chunks {s['from_chunk']}..{s['from_chunk'] + s['chunks'] - 1}  "
        f"{s['fps']:8.2f} frames/s ({s['realtime_x']:.2f}x real time at {FPS} fps): "
        f"{s['frames']} frames in {s['seconds']:.2f} s; median chunk {s['steady_chunk_ms']:.1f} "
        f"ms = {s['fps_from_median']:.2f} frames/s; flatness {_f(s['flatness'])}",
        f"run                       {run_['chunks']} chunks, {run_['frames_written']} frames "
        f"written, {run_['frames_in_file']} in the file, {run_['seconds']:.2f} s "
        f"({_f(run_['overall_fps'], '.2f')} frames/s overall), stream state "
        f"{run_['stream_state_mib']:.1f} MiB; writer thread {run_['write_ms_steady_median']:.1f} "
        "ms per steady chunk (encode + fsync)",
    ]
    if r["phases"]:
        ph = r["phases"]
        lines.append(f"phases per steady chunk ({ph['timer']}; host = enqueue time), median ms:")
        for name in PHASES:
            p = ph[name]
            lines.append(
                f"  {name:8s} {p['steady_median_ms']:9.2f}   host {p['host_steady_median_ms']:8.2f}"
                f"   ({p['calls']} calls, {p['total_ms']:.0f} ms total)"
            )
        lines.append(
            f"  {'sum':8s} {ph['steady_sum_ms']:9.2f}   of a {ph['chunk_ms']:.2f} ms chunk "
            "interval (rest: idle, noise H2D, glue)"
        )
    if r["memory"]:
        m = r["memory"]
        lines.append(
            f"memory GiB: weights {m['weights_gib']:.2f} | peak allocated "
            f"{m['peak_allocated_gib']:.2f} | peak reserved {m['peak_reserved_gib']:.2f} | "
            f"device used end {m['device_used_end_gib']:.2f} (sampled max "
            f"{m['device_used_sampled_max_gib']:.2f}; outside allocator "
            f"{m['outside_allocator_gib']:.2f}) | device peak est. "
            f"{m['device_peak_estimate_gib']:.2f} = {m['device_peak_estimate_gib'] * GIB / 1e9:.2f}"
            f" GB vs target {m['target_gb']:.0f} GB"
        )
    a = r["sync_audit"]
    if a:
        state = "sync debug mode" if a["enabled"] else "no CUDA: nothing to report"
        lines.append(
            f"sync audit ({state}): {a['total']} syncs over {a['chunks']} steady chunks "
            f"= {a['per_chunk']:.1f}/chunk"
        )
        lines += [f"  {n:5d}  {site}" for site, n in a["sites"].items()]
        lines += [f"  {n:5d}  other warning: {w}" for w, n in a["other_warnings"].items()]
    pr = r["profile"]
    if pr:
        lines.append(
            f"profile over {pr['chunks']} steady chunks: {pr['what']}, {pr['kernel_ms']:.1f} ms "
            f"in {pr['wall_s']:.2f} s wall (busy {pr['busy']:.0%}), {pr['kernels']} distinct"
        )
        lines.append("  attention kernels: " + (", ".join(pr["attention_kernels"]) or "none seen"))
        for k in pr["top"]:
            lines.append(
                f"  {k['ms']:9.2f} ms {k['share']:6.1%} {k['calls']:6d}x  {k['name'][:100]}"
            )
    lines.append(f"total {r['total_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    print(table(result))
    print("\nwhat the figures mean:")
    for key, text in FIGURES.items():
        print(f"  {key}: {text}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
