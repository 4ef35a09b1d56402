"""The `adastate` command: generate, demo, info, tiny-model."""

from __future__ import annotations

import argparse
import json
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
def graceful_interrupt():
    """First Ctrl-C: finish the chunk in flight, close the file, stop. Second: abort now."""
    state = {"stop": False}

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        print(
            "\nadastate: stopping after this chunk (Ctrl-C again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        yield lambda: state["stop"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------------------------
# generate


def _stream_config(args, seed: int):
    from .stream.config import StreamConfig, parse_steps

    steps = parse_steps(args.steps)
    return StreamConfig(
        height=args.height,
        width=args.width,
        policy=args.anchor,
        chunk=args.chunk,
        state=args.state,
        window=args.window,
        anchor_frames=args.anchor_frames,
        ema_alpha=args.ema_alpha,
        steps=steps,
        shift=args.shift,
        seed=seed,
    )


def _total_chunks(args, config) -> int:
    if args.chunks is not None:
        if args.chunks < 1:
            raise AdaStateError("--chunks must be >= 1")
        return args.chunks
    if args.seconds is not None:
        if args.seconds <= 0:
            raise AdaStateError("--seconds must be > 0")
        return config.chunks_for_seconds(args.seconds, args.fps)
    raise AdaStateError("say how long the video is: --seconds N or --chunks N")


def _jobs(args) -> list[tuple[list, Path]]:
    """(schedule, output path) per video."""
    from .prompts import parse_schedule, read_batch_file, read_schedule_file, slug

    ext = args.format
    if args.prompts:
        batch = read_batch_file(args.prompts)
        out_dir = Path(args.out or "adastate_out")
        if out_dir.suffix and not out_dir.is_dir():
            raise AdaStateError(f"with --prompts, --out is a folder for the videos, not {out_dir}")
        return [
            (sched, out_dir / f"{i + 1:04d}_{slug(sched[0].text)}.{ext}")
            for i, sched in enumerate(batch)
        ]
    if args.schedule:
        sched = read_schedule_file(args.schedule)
    elif args.prompt is not None:
        sched = parse_schedule(args.prompt)
    elif args.resume:
        sched = None  # taken from the run state
    else:
        raise AdaStateError("give a prompt: --prompt TEXT, --schedule FILE or --prompts FILE")
    out = Path(args.out) if args.out else Path(f"adastate_{args.seed}.{ext}")
    return [(sched, out)]


def _check_writable(path: Path) -> None:
    """Fail before any model loads if the output cannot be written (format or folder)."""
    from .io import format_of

    format_of(path)
    folder = path.parent if path.suffix else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".adastate_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise AdaStateError(f"cannot write the output {path}: {err.strerror} ({folder})") from None


def _encode(args, files, texts: list[str]):
    """Prompt text -> umT5 rows (disk-cached; the encoder is loaded only for new prompts and
    freed before the DiT loads)."""
    from .text import encode_prompts

    cache_dir = (
        Path(args.cache_dir).expanduser()
        if args.cache_dir
        else (Path.home() / ".cache" / "adastate" / "embeddings")
    )
    rows = encode_prompts(
        texts, files.text_encoder, cache_dir=cache_dir, tokenizer=args.tokenizer, device=args.device
    )
    return dict(zip(texts, rows))


def _run_video(
    args, model, vae, embed, schedule, out: Path, *, resume=None, label: str = ""
) -> bool:
    """Generate one video; True if it was stopped early (Ctrl-C)."""
    from .io import open_writer
    from .pipeline import generate, load_run
    from .stream import PromptSchedule, init_stream

    marker = out.with_name(out.name + ".incomplete")
    if resume is not None:
        stream, vae_cache, frames_written, meta = load_run(model, resume, device=model.device)
        saved_schedule = json.loads(meta.get("schedule", "null"))
        if schedule is None:
            if saved_schedule is None:
                raise AdaStateError(f"{resume} holds no prompt; pass --prompt")
            from .prompts import TimedPrompt

            schedule = [TimedPrompt(s, t) for s, t in saved_schedule]
        config = stream.config
        if "out" in meta and not args.out:
            out = Path(meta["out"])
            marker = out.with_name(out.name + ".incomplete")
    else:
        config = _stream_config(args, args.seed)
        stream, vae_cache, frames_written = None, None, 0
    total = _total_chunks(args, config)
    prompts = PromptSchedule.from_seconds(
        config, [(p.seconds, embed(p.text)) for p in schedule], recache=args.recache
    )
    if stream is None:
        stream = init_stream(model, prompts.at(0), config)
    settings = {
        "prompt": " | ".join(f"{p.seconds:g}:{p.text}" for p in schedule),
        "seed": str(config.seed),
        "anchor": config.policy,
        "settings": config.to_json(),
        "generator": "adastate",
    }
    state_meta = {"schedule": json.dumps([(p.seconds, p.text) for p in schedule]), "out": str(out)}
    state_path = args.save_state or resume
    _check_writable(out)
    marker.write_text(json.dumps({"chunks": total}))
    bar = ProgressBar(total, label)
    with (
        graceful_interrupt() as should_stop,
        open_writer(
            out,
            fps=args.fps,
            crf=args.crf,
            metadata=settings,
            resume_frames=frames_written,
        ) as writer,
    ):
        result = generate(
            model,
            vae,
            stream,
            writer,
            total_chunks=total,
            prompts=prompts,
            vae_cache=vae_cache,
            frames_written=frames_written,
            state_path=state_path,
            state_meta=state_meta,
            on_chunk=bar,
            should_stop=should_stop,
        )
    bar.close()
    if result.stopped and result.chunks < total:
        hint = (
            f"; continue with --resume {state_path}"
            if state_path
            else (" (pass --save-state FILE to be able to resume)")
        )
        print(
            f"adastate: stopped after chunk {result.chunks}: {result.frames_written} frames "
            f"in {out}{hint}",
            file=sys.stderr,
        )
        return True
    marker.unlink(missing_ok=True)
    rate = result.frames_written / result.seconds if result.seconds else 0.0
    print(
        f"wrote {out}: {result.frames_written} frames ({result.chunks} chunks) at "
        f"{rate:.1f} frames/s"
    )
    return False


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .locate import find_models
    from .model import load_dit
    from .vae import load_vae

    jobs = _jobs(args)
    todo = []
    for schedule, out in jobs:
        marker = out.with_name(out.name + ".incomplete")
        if args.prompts and out.exists() and not marker.exists():
            print(f"skip {out}: already finished", file=sys.stderr)
            continue
        _check_writable(out)
        todo.append((schedule, out))
    if not todo:
        print("nothing to do: every output exists", file=sys.stderr)
        return 0
    files = find_models(args.models_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder)
    for note in files.notes:
        print(f"adastate: note: {note}", file=sys.stderr)
    texts = sorted({p.text for sched, _ in todo if sched for p in sched})
    if args.resume and todo[0][0] is None:
        from .stream import read_extras

        _, meta = read_extras(args.resume)
        texts = sorted({t for _, t in json.loads(meta.get("schedule", "[]"))})
    rows = _encode(args, files, texts)
    device = torch.device(args.device)
    model = load_dit(files.dit, dtype=args.dtype, device=device, attention=args.attention)
    vae = load_vae(files.vae, dtype=args.vae_dtype, device=device)
    _total_chunks(args, _stream_config(args, args.seed))  # fail early on a bad length
    for i, (schedule, out) in enumerate(todo):
        label = f"[{i + 1}/{len(todo)}] " if len(todo) > 1 else ""
        stopped = _run_video(
            args,
            model,
            vae,
            rows.__getitem__,
            schedule,
            out,
            resume=args.resume if i == 0 else None,
            label=label,
        )
        if stopped:
            return 130
    return 0


# ----------------------------------------------------------------------------------------------
# demo


def _cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    import torch
    from safetensors.torch import save_file

    from .io import open_writer
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
    cond = pseudo_embedding(args.prompt, 7, TINY.text_dim)
    stream = init_stream(dit, cond, config)
    total = config.chunks_for_seconds(args.seconds)
    out = Path(args.out)
    _check_writable(out)
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
    with open_writer(out, fps=16, metadata=meta) as writer:
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

    path = convert_checkpoint(args.source, args.target, dtype=args.dtype)
    size = path.stat().st_size / 2**30
    print(f"wrote {path} ({size:.2f} GiB, ComfyUI repack safetensors)")
    return 0


def _cmd_tiny_model(args: argparse.Namespace) -> int:
    from .model.random_weights import TINY, save_random_checkpoint

    path = save_random_checkpoint(args.path, TINY, seed=args.seed, layout=args.layout)
    print(f"wrote a tiny random-weight Wan2.1 DiT ({args.layout} layout) to {path}")
    print("it only exercises the machinery: its video is noise")
    return 0


# ----------------------------------------------------------------------------------------------
# parser


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    from .stream.config import POLICIES

    p.add_argument(
        "--anchor",
        default="adaptive",
        choices=POLICIES,
        help="anchor policy (default adaptive = AdaState)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adastate",
        description="AdaState: streaming text-to-video with a self-evolving anchor (Wan2.1).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate",
        help="generate video(s) from text",
        description="Generate a streaming video; frames are written as they "
        "are produced, Ctrl-C finishes the file cleanly.",
    )
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
    _add_stream_options(gen)
    gen.add_argument("--out", help="output file (folder with --prompts)")
    gen.add_argument("--format", default="mp4", choices=FORMATS, help="with --prompts / no --out")
    gen.add_argument("--fps", type=int, default=16)
    gen.add_argument("--crf", type=int, default=19)
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
    models.add_argument("--attention", default="sdpa", choices=["sdpa", "sageattention"])
    adv = gen.add_argument_group("stream")
    adv.add_argument("--chunk", type=int, default=3, help="latent frames per chunk (C)")
    adv.add_argument("--state", type=int, default=1, help="adaptive state frames (S)")
    adv.add_argument("--window", type=int, default=3, help="cached content frames (W)")
    adv.add_argument("--anchor-frames", type=int, default=1, help="static/ema sink frames (A)")
    adv.add_argument("--ema-alpha", type=float, default=0.999)
    adv.add_argument("--steps", default="1000,750,500,250")
    adv.add_argument("--shift", type=float, default=5.0)
    adv.add_argument(
        "--recache",
        action="store_true",
        help="recompute cached K/V on a prompt switch (LongLive re-cache)",
    )
    adv.add_argument(
        "--save-state", metavar="FILE", help="save the resumable run state after every chunk"
    )
    adv.add_argument("--resume", metavar="FILE", help="continue a run saved with --save-state")
    gen.set_defaults(func=_cmd_generate)

    demo = sub.add_parser("demo", help="smoke run of the whole pipeline on tiny random weights")
    demo.add_argument("--out", default="adastate_demo.mp4")
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--prompt", default="a smoke test of the streaming machinery")
    demo.add_argument("--anchor", default="adaptive")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--height", type=int, default=128)
    demo.add_argument("--width", type=int, default=192)
    demo.set_defaults(func=_cmd_demo)

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


if __name__ == "__main__":
    sys.exit(main())
