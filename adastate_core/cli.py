"""The `adastate` command: generate, extend, compare, evaluate, demo, info, convert, tiny-model,
train."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import AdaStateError

FORMATS = ("mp4", "webm", "webp", "gif", "png")


# ----------------------------------------------------------------------------------------------
# progress and interruption


class ProgressBar:
    """chunks done, frames/s and ETA on stderr (one updating line on a terminal)."""

    def __init__(self, total: int | None, label: str = "", stream=sys.stderr):
        self.total, self.label, self.out = total, label, stream
        self.tty = stream.isatty()

    def __call__(self, report) -> None:
        done = report.index + 1
        fps = report.frames_written / report.elapsed if report.elapsed > 0 else 0.0
        if self.total:
            width = 24
            filled = int(width * done / self.total)
            bar = "#" * filled + "." * (width - filled)
            per_chunk = report.elapsed / max(1, done - self._start(report))
            eta = per_chunk * (self.total - done)
            line = (
                f"{self.label}chunk {done}/{self.total} [{bar}] {report.frames_written} frames, "
                f"{fps:.1f} frames/s, ETA {int(eta // 60)}:{int(eta % 60):02d}"
            )
        else:
            line = f"{self.label}chunk {done} | {report.frames_written} frames, {fps:.1f} frames/s"
        if self.tty:
            print("\r" + line, end="", file=self.out, flush=True)
        else:
            print(line, file=self.out, flush=True)

    def _start(self, report) -> int:
        if not hasattr(self, "_first"):
            self._first = report.index
        return self._first

    def close(self) -> None:
        if self.tty:
            print(file=self.out)


@contextmanager
def graceful_interrupt(
    notice: str = "stopping after this chunk (Ctrl-C again to abort now)",
    signals: tuple = (signal.SIGINT,),
):
    """First Ctrl-C (or another of `signals`): finish the unit of work in flight (a chunk, a
    training iteration), then stop; `notice` says so. Second: abort now."""
    state = {"stop": False}

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        print(f"\nadastate: {notice}", file=sys.stderr, flush=True)

    previous = {}
    for sig in signals:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    try:
        yield lambda: state["stop"]
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ----------------------------------------------------------------------------------------------
# generate (adastate_core/generate_cmd.py)


def _cmd_generate(args: argparse.Namespace) -> int:
    from .generate_cmd import run

    return run(args)


def _cmd_extend(args: argparse.Namespace) -> int:
    from .generate_cmd import extend_args, run

    return run(extend_args(args))


def _cmd_compare(args: argparse.Namespace) -> int:
    from .evaluate.compare import run_compare

    return run_compare(args)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.report import evaluate_videos, write_report

    labels = [x.strip() for x in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.videos):
        raise AdaStateError(f"{len(labels)} labels for {len(args.videos)} videos")
    shown = [-1]

    def progress(done: int, total: int, label: str) -> None:
        pct = int(100 * done / max(total, 1))
        if pct != shown[0]:
            shown[0] = pct
            print(f"\revaluating {label}: {pct:3d} %", end="", file=sys.stderr, flush=True)

    try:
        import cv2  # noqa: F401
    except ImportError:
        raise AdaStateError(
            "video metrics need OpenCV: pip install opencv-python-headless (or the package's "
            "`eval` extra)"
        ) from None
    vbench = None
    if args.vbench:  # checked first: a missing VBench is refused before any work
        from .evaluate.vbench import run_vbench

        names = labels or [Path(v).stem for v in args.videos]
        vbench = run_vbench(args.videos, names, args.out)
    results = evaluate_videos(args.videos, labels, on_progress=progress)
    print(file=sys.stderr)
    page = write_report(results, args.out, vbench=vbench)
    from .evaluate.report import markdown_table

    print(markdown_table(results))
    print(f"wrote {page}")
    return 0


# ----------------------------------------------------------------------------------------------
# demo


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    import torch
    from safetensors.torch import save_file

    from .generate_cmd import probe_folder
    from .io import format_of, open_writer
    from .model import load_dit
    from .model.random_weights import TINY, save_random_checkpoint
    from .pipeline import generate, pseudo_embedding
    from .stream import StreamConfig, init_stream
    from .vae import load_vae
    from .vae.random_weights import random_state_dict as random_vae

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:  # real files, read through the real loaders
        dit = load_dit(save_random_checkpoint(Path(tmp) / "tiny_dit.safetensors", TINY))
        save_file(random_vae(dim=8), str(Path(tmp) / "tiny_vae.safetensors"))
        vae = load_vae(Path(tmp) / "tiny_vae.safetensors")
    config = StreamConfig(height=args.height, width=args.width, policy=args.anchor, seed=args.seed)
    total = config.chunks_for_seconds(args.seconds)
    out = _demo_path(args.out)
    format_of(out)
    probe_folder(out.parent, "the output")
    cond = pseudo_embedding(args.prompt, 7, TINY.text_dim)
    stream = init_stream(dit, cond, config)
    print(
        "adastate demo: a SMOKE RUN of the machinery on a tiny random-weight DiT and VAE "
        "written on the fly (no download) — the video is structured noise, not a picture.",
        file=sys.stderr,
    )
    bar = ProgressBar(total)
    meta = {
        "prompt": args.prompt,
        "seed": str(args.seed),
        "settings": config.to_json(),
        "generator": "adastate demo (random weights)",
    }
    start = time.perf_counter()
    with open_writer(out, fps=16, metadata=meta, exclusive=True) as writer:
        result = generate(dit, vae, stream, writer, total_chunks=total, on_chunk=bar)
    bar.close()
    elapsed = time.perf_counter() - start
    print(
        f"demo: {result.chunks} chunks, {result.frames_written} frames of "
        f"{args.width}x{args.height} in {elapsed:.2f} s = "
        f"{result.frames_written / elapsed:.1f} frames/s (DiT + VAE + encode, tiny model) "
        f"-> {out}"
    )
    return 0


def _demo_path(given: str | None) -> Path:
    """--out if free (an existing file is refused), else adastate_demo.mp4 or the next free
    adastate_demo_NNN.mp4: a demo never replaces a file."""
    from .outputs import existing, free_name

    if given:
        out = Path(given)
        if existing(out):
            raise AdaStateError(f"{out} exists; it is never overwritten: choose another --out")
        return out
    out = Path("adastate_demo.mp4")
    return out if not existing(out) else free_name(Path.cwd(), "adastate_demo", "mp4")


# ----------------------------------------------------------------------------------------------
# info / tiny-model


def _cmd_info(args: argparse.Namespace) -> int:
    from .model.loader import inspect_checkpoint

    for path in args.paths:
        info = inspect_checkpoint(path, text_len=args.text_len, num_heads=args.num_heads)
        print("\n".join(info.lines()))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .model.convert import convert_checkpoint

    path = convert_checkpoint(args.source, args.target, dtype=args.dtype, causal_ar=args.causal_ar)
    size = path.stat().st_size / 2**30
    kind = "marked causal_ar: ComfyUI builds its CausalWanModel" if args.causal_ar else ""
    print(f"wrote {path} ({size:.2f} GiB, ComfyUI repack safetensors{'; ' + kind if kind else ''})")
    return 0


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from .model.random_weights import TINY, save_random_checkpoint

    target = Path(args.path)
    if os.path.lexists(target):
        raise AdaStateError(
            f"{target} exists ({'a folder' if target.is_dir() else 'a file'}); it is never "
            "overwritten: choose a new file name"
        )
    path = save_random_checkpoint(target, TINY, seed=args.seed, layout=args.layout)
    print(f"wrote a tiny random-weight Wan2.1 DiT ({args.layout} layout) to {path}")
    print("it only exercises the machinery: its video is noise")
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adastate",
        description="AdaState: streaming text-to-video with a self-evolving anchor (Wan2.1).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the Python traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    # the options of `generate`, shared with `extend` (a parent parser)
    gen = argparse.ArgumentParser(add_help=False)
    src = gen.add_argument_group("prompts")
    src.add_argument("--prompt", help='text, or a timed schedule "0:a cat walks | 5:the cat runs"')
    src.add_argument(
        "--schedule", metavar="FILE", help="timed schedule file: 'seconds: prompt' lines"
    )
    src.add_argument(
        "--prompts",
        metavar="FILE",
        help="batch: one video per line; outputs that exist are skipped on re-run",
    )
    length = gen.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float)
    length.add_argument("--chunks", type=int)
    from .stream.config import POLICIES

    gen.add_argument(
        "--anchor", default=None, choices=POLICIES,
        help="anchor policy (default adaptive = AdaState)",
    )  # fmt: skip
    gen.add_argument("--seed", type=int, default=None, help="0 .. 2^64-1 (default 0)")
    gen.add_argument("--height", type=int, default=None, help="default 480")
    gen.add_argument("--width", type=int, default=None, help="default 832")
    gen.add_argument(
        "--out",
        help="output file (folder with --prompts); default adastate_<prompt>_<seed>_NNN.mp4, "
        "never an existing name",
    )
    gen.add_argument(
        "--overwrite", action="store_true",
        help="replace an existing --out (otherwise an existing file is refused)",
    )  # fmt: skip
    gen.add_argument(
        "--no-memory-check", action="store_true",
        help="start even if the estimated memory need exceeds what the device has free",
    )  # fmt: skip
    gen.add_argument("--format", default="mp4", choices=FORMATS, help="with --prompts / no --out")
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--crf", type=int, default=19)
    from .io.video import X264_PRESETS

    gen.add_argument(
        "--preset", default="medium", choices=X264_PRESETS,
        help="MP4 encoder speed (default medium; veryfast: 2-4x faster encoding, larger file; "
        "a resume must use the first run's)",
    )  # fmt: skip
    models = gen.add_argument_group("models")
    models.add_argument("--models-dir", help="ComfyUI models folder (or ComfyUI root)")
    models.add_argument("--dit", help="causal Wan2.1 DiT (.safetensors / .pt)")
    models.add_argument("--vae", help="wan_2.1_vae.safetensors")
    models.add_argument(
        "--text-encoder", help="umt5_xxl_fp8_e4m3fn_scaled.safetensors / umt5_xxl_fp16"
    )
    models.add_argument("--tokenizer", help="tokenizer folder (only for the official .pth encoder)")
    models.add_argument("--cache-dir", help="prompt embedding cache (default ~/.cache/adastate)")
    models.add_argument("--device", default="cuda" if _cuda() else "cpu")
    models.add_argument(
        "--dtype",
        default=None,
        choices=["fp32", "bf16", "fp16"],
        help="DiT compute dtype (default bf16 on CUDA, fp32 on CPU)",
    )
    models.add_argument("--vae-dtype", default=None, choices=["fp32", "bf16", "fp16"])
    models.add_argument(
        "--compile", action="store_true",
        help="torch.compile the DiT blocks (fast mode: fused kernels, rounding-level changes; "
        "the first chunks compile, ~1 min)",
    )  # fmt: skip
    models.add_argument(
        "--residual", default="fp32", choices=["fp32", "bf16"],
        help="DiT residual stream, norms and modulation: fp32 (exact, the official code) or "
        "bf16 (fast mode, as Self-Forcing's own inference runs; ≈ 0.6%% relative change per "
        "call, see README)",
    )  # fmt: skip
    models.add_argument(
        "--attention", default="sdpa", choices=["sdpa", "cudnn", "sageattention"],
        help="attention kernel: sdpa (PyTorch's choice), cudnn (cuDNN first: faster on "
        "H100/H200), sageattention (if installed)",
    )  # fmt: skip
    adv = gen.add_argument_group("stream")
    adv.add_argument("--chunk", type=int, default=None, help="latent frames per chunk (C, 3)")
    adv.add_argument("--state", type=int, default=None, help="adaptive state frames (S, 1)")
    adv.add_argument("--window", type=int, default=None, help="cached content frames (W, 3)")
    adv.add_argument(
        "--anchor-frames", type=int, default=None, help="static/ema sink frames (A, 1)"
    )
    adv.add_argument("--ema-alpha", type=float, default=None, help="default 0.999")
    adv.add_argument("--steps", default=None, help="default 1000,750,500,250")
    adv.add_argument("--shift", type=float, default=None, help="default 5.0")
    adv.add_argument(
        "--recache",
        action="store_true",
        help="recompute cached K/V on a prompt switch (LongLive re-cache)",
    )
    adv.add_argument(
        "--save-state", metavar="FILE", help="save the resumable run state after every chunk"
    )
    adv.add_argument("--resume", metavar="FILE", help="continue a run saved with --save-state")
    init = gen.add_argument_group("start from an image or a video")
    start = init.add_mutually_exclusive_group()
    start.add_argument(
        "--init-image", metavar="FILE",
        help="the video starts with this image (the first frame; the rest of the first chunk "
        "and everything after is generated)",
    )  # fmt: skip
    start.add_argument(
        "--init-video", metavar="FILE",
        help="the video starts with this clip and continues it (its last 1+4k frames)",
    )  # fmt: skip
    init.add_argument(
        "--init-frames", type=int, default=None, metavar="N",
        help="use at most the last N frames of --init-video (fewer frames prime faster; the "
        "cache only keeps the last window of them anyway)",
    )  # fmt: skip
    init.add_argument(
        "--init-output", default="original", choices=["original", "decoded"],
        help="the file starts with the original (resized) frames, or with them encoded and "
        "decoded by the VAE (default original)",
    )  # fmt: skip
    common = gen
    gen = sub.add_parser(
        "generate",
        parents=[common],
        help="generate video(s) from text",
        description="Generate a streaming video; frames are written as they "
        "are produced, Ctrl-C finishes the file cleanly.",
    )
    gen.set_defaults(func=_cmd_generate)
    ext = sub.add_parser(
        "extend",
        parents=[common],
        help="make a video longer: continue it for --seconds more",
        description="Continue VIDEO for --seconds (or --chunks) more into a new file (never "
        "the input). The prompt, seed and stream settings are read from the file when adastate "
        "wrote it; otherwise give --prompt. Every generate option applies.",
    )
    ext.add_argument("video", help="the video to continue (mp4 / webm / gif / webp)")
    ext.set_defaults(func=_cmd_extend)

    cmp_ = sub.add_parser(
        "compare",
        parents=[common],
        help="one prompt and seed under several anchor policies: videos, a grid, a report",
        description="Generate the same prompt and seed (the same content noise) under each "
        "anchor policy (and optionally several checkpoints / window sizes) into --out (a "
        "folder): one video each, grid.mp4 side by side with labels, and an evaluation report "
        "(report/index.html). Re-running keeps the finished videos.",
    )
    cmp_.add_argument(
        "--anchors", default="adaptive,static,ema,none", help="policies, comma-separated"
    )
    cmp_.add_argument("--checkpoints", default=None, help="DiT files to compare, comma-separated")
    cmp_.add_argument("--windows", default=None, help="window sizes W to compare, e.g. 3,6")
    cmp_.set_defaults(func=_cmd_compare)

    ev = sub.add_parser(
        "evaluate",
        help="measure dynamics, flicker and drift of videos (offline, no model weights)",
        description="Metrics of each video (VBench-style dynamic degree with OpenCV DIS flow, "
        "temporal flicker and its motion-compensated residual, a smoothness proxy, content and "
        "quality drift per second) into a report folder: report.csv, report.md, curves.png, "
        "scatter.png, metrics.json and index.html. Needs opencv-python-headless.",
    )
    ev.add_argument("videos", nargs="+", help="video files (mp4 / webm / gif / webp / png frames)")
    ev.add_argument(
        "--out", default="adastate_report", help="report folder (default adastate_report)"
    )
    ev.add_argument("--labels", default=None, help="names for the videos, comma-separated")
    ev.add_argument(
        "--vbench", action="store_true",
        help="also run VBench's own dimensions, if VBench and its model weights are installed "
        "(nothing is downloaded)",
    )  # fmt: skip
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="smoke run of the whole pipeline on tiny random weights")
    demo.add_argument(
        "--out", default=None, help="default adastate_demo.mp4 (adastate_demo_NNN.mp4 if taken)"
    )
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--prompt", default="a smoke test of the streaming machinery")
    demo.add_argument("--anchor", default="adaptive")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--height", type=int, default=128)
    demo.add_argument("--width", type=int, default=192)
    demo.set_defaults(func=_cmd_demo)
    for sp in (gen, demo):  # `--debug` also after the command
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the Python traceback of an unexpected error")  # fmt: skip

    info = sub.add_parser(
        "info", help="describe a DiT checkpoint: format, size, dtype, parameter count"
    )
    info.add_argument("paths", nargs="+", metavar="PATH", help="checkpoint file or model folder")
    info.add_argument(
        "--text-len",
        type=int,
        default=None,
        help="text length (default: from the file's config, else 512)",
    )
    info.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (default: from the file's config, else width / 128)",
    )
    info.set_defaults(func=_cmd_info)

    convert = sub.add_parser(
        "convert",
        help="write a DiT checkpoint (e.g. self_forcing_dmd.pt) as a ComfyUI .safetensors",
    )
    convert.add_argument("source", help="any checkpoint `adastate info` recognises")
    convert.add_argument("target", help="the new .safetensors file (never overwritten)")
    convert.add_argument(
        "--dtype", choices=["fp32", "fp16", "bf16"], default=None,
        help="dtype of the output (default: the source's; fp16 for fp8 files)",
    )  # fmt: skip
    convert.add_argument(
        "--causal-ar", action="store_true",
        help="mark the file causal_ar, so ComfyUI's own loader (0.4+) builds its "
        "CausalWanModel (SamplerARVideo) from it; our nodes read it the same either way",
    )  # fmt: skip
    convert.set_defaults(func=_cmd_convert)

    tiny = sub.add_parser(
        "tiny-model", help="write a tiny random-weight DiT checkpoint (smoke tests, no download)"
    )
    tiny.add_argument("path", help="output .safetensors (or .pt for --layout self-forcing)")
    tiny.add_argument(
        "--layout", default="comfyui", choices=["comfyui", "official", "self-forcing"]
    )
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_tiny_model)

    from .train.command import add_parser as add_train_parser

    add_train_parser(sub)
    return parser


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AdaStateError as err:
        print(f"adastate: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("adastate: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug or an environment problem: one line, never a traceback
        if args.debug:
            raise
        print(f"adastate: error: {_unexpected(err)}", file=sys.stderr)
        print(
            "adastate: files written so far are kept; run again with --debug to see the "
            "traceback (and report it if it looks like a bug)",
            file=sys.stderr,
        )
        return 1


def _unexpected(err: Exception) -> str:
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return (
            "out of memory on the GPU; make the video smaller (--height/--width, --chunk, "
            "--window) or use --dtype bf16 / --vae-dtype bf16"
        )
    if isinstance(err, MemoryError):
        return "out of memory; make the video smaller (--height/--width, --chunk, --window)"
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'no details'}"


if __name__ == "__main__":
    sys.exit(main())
