"""`adastate generate`: plan every video and refuse a bad request before any model loads, then
encode the prompts, load the models and run each video under a lock on its output.

The guarantees (tests/test_robustness.py): no file the user had is written over unless named
with --overwrite (a batch may redo a video it made itself); a run continues only a video whose
stored prompt, seed and settings are its own; two processes never write one output; every
refusal is a message that says what to do, before the text encoder or the DiT loads."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AdaStateError
from .outputs import OutputError, OutputLock, existing, free_name, remove, video_info

MAX_CRF = {"mp4": 51, "webm": 63}

# generate's stream settings: flag dest -> (StreamConfig field, default). The flags default to
# None so a resumed run can tell what the user asked from what they left out.
SETTINGS = {
    "height": ("height", 480),
    "width": ("width", 832),
    "anchor": ("policy", "adaptive"),
    "chunk": ("chunk", 3),
    "state": ("state", 1),
    "window": ("window", 3),
    "anchor_frames": ("anchor_frames", 1),
    "ema_alpha": ("ema_alpha", 0.999),
    "steps": ("steps", "1000,750,500,250"),
    "shift": ("shift", 5.0),
    "seed": ("seed", 0),
}


@dataclass
class Job:
    """One video to make."""

    schedule: list  # [TimedPrompt]
    out: Path
    config: object  # StreamConfig
    total: int
    resume: Path | None = None
    frames_written: int = 0
    replace: bool = False  # remove what is at `out` first (--overwrite, or a batch redo)
    label: str = ""
    where: str = ""  # where the request came from (a batch line), for messages
    notes: list[str] = field(default_factory=list)
    prefix: object = None  # uint8 frames [T, H, W, 3] the video starts from (--init-*)
    prefix_source: str = ""

    @property
    def identity(self) -> tuple[str, str, str]:
        """(prompt, seed, settings) as stored in the video's metadata."""
        return prompt_string(self.schedule), str(self.config.seed), self.config.to_json()


def prompt_string(schedule) -> str:
    return " | ".join(f"{p.seconds:g}:{p.text}" for p in schedule)


def setting(args, dest: str):
    value = getattr(args, dest, None)
    return SETTINGS[dest][1] if value is None else value


def given_settings(args) -> dict[str, object]:
    """The stream settings the user typed (dest -> value)."""
    return {d: getattr(args, d) for d in SETTINGS if getattr(args, d, None) is not None}


def stream_config(args):
    from .stream.config import StreamConfig, parse_steps

    return StreamConfig(
        height=setting(args, "height"),
        width=setting(args, "width"),
        policy=setting(args, "anchor"),
        chunk=setting(args, "chunk"),
        state=setting(args, "state"),
        window=setting(args, "window"),
        anchor_frames=setting(args, "anchor_frames"),
        ema_alpha=setting(args, "ema_alpha"),
        steps=parse_steps(setting(args, "steps")),
        shift=setting(args, "shift"),
        seed=setting(args, "seed"),
    )


def total_chunks(args, config, default: int | None = None) -> int:
    if args.chunks is not None:
        if args.chunks < 1:
            raise AdaStateError(f"--chunks must be >= 1, got {args.chunks}")
        if args.chunks > 10_000_000:
            raise AdaStateError(f"--chunks {args.chunks} is more than this tool accepts")
        return args.chunks
    if args.seconds is not None:
        if not math.isfinite(args.seconds) or args.seconds <= 0:
            raise AdaStateError(f"--seconds must be a finite number > 0, got {args.seconds:g}")
        return config.chunks_for_seconds(args.seconds, args.fps)
    if default is not None:
        return default
    raise AdaStateError("say how long the video is: --seconds N or --chunks N")


# -- checks that need no model -------------------------------------------------------------------


def check_writer_options(fmt: str, fps: int, crf: int) -> None:
    if not 1 <= fps <= 240:
        raise AdaStateError(f"--fps must be between 1 and 240, got {fps}")
    limit = MAX_CRF.get(fmt)
    if limit is not None and not 0 <= crf <= limit:
        raise AdaStateError(f"--crf for {fmt} must be between 0 and {limit}, got {crf}")


def check_texts(schedule, where: str) -> None:
    for p in schedule:
        try:
            p.text.encode("utf-8")
        except UnicodeEncodeError:
            raise AdaStateError(
                f"{where} holds bytes that are not valid UTF-8 text ({p.text!r}); retype the "
                "prompt or save the file as UTF-8"
            ) from None
        if "\x00" in p.text:
            raise AdaStateError(f"{where} holds a NUL character; remove it")


def check_switches(config, schedule, total: int, where: str) -> list[str]:
    """Prompt switches must fall in different chunks; -> warnings (switches past the end)."""
    from .stream.config import FPS

    chunk_seconds = 4 * config.chunk / FPS
    chunks = [config.chunk_at_seconds(p.seconds) for p in schedule]
    for (a, ka), (b, kb) in zip(zip(schedule, chunks), zip(schedule[1:], chunks[1:])):
        if kb <= ka:
            raise AdaStateError(
                f"{where}: the prompts at {a.seconds:g} s and {b.seconds:g} s would start in "
                f"the same chunk (a chunk lasts {chunk_seconds:g} s; switches happen at chunk "
                "boundaries); space the switches further apart"
            )
    return [
        f"{where}: the switch at {p.seconds:g} s is after the end of the video "
        f"({config.frames_after(total) / FPS:g} s) and is not used"
        for p, k in zip(schedule, chunks)
        if k >= total
    ]


def _read_schedule(args) -> tuple[list | None, str]:
    from .prompts import parse_schedule, read_schedule_file

    if args.schedule:
        return read_schedule_file(args.schedule), f"the schedule file {args.schedule}"
    if args.prompt is not None:
        return parse_schedule(args.prompt), "--prompt"
    return None, ""


def _refuse_existing(out: Path, found: list[Path], check_lock: bool = True) -> OutputError:
    if check_lock:
        try:  # being written right now by another run? say so
            OutputLock(out).acquire().release()
        except OutputError as busy:
            return busy
    info = video_info(out)
    what = (
        f"{out} exists" if found == [out] else f"{out.parent} already holds frames {found[0].name}…"
    )
    hint = ""
    if info is not None and info.ours:
        hint = (
            " (an adastate video of "
            f"{info.frames} frames; if it is an unfinished run, continue it with --resume STATE)"
        )
    return OutputError(
        f"{what}{hint}; adastate never overwrites a file: choose another --out, or pass "
        "--overwrite to replace it"
    )


def _resume_job(args) -> Job:
    """The job of `--resume STATE`, checked against the state and the video it continues."""
    from .pipeline import RUN_FORMAT
    from .prompts import TimedPrompt
    from .stream import saved_settings
    from .stream.config import parse_steps

    state = Path(args.resume)
    config, index, extra = saved_settings(state)
    if extra.get("format") != RUN_FORMAT:
        raise AdaStateError(
            f"{state} is a stream state without the video decoder's cache: it can continue a "
            "latent stream from Python, but not a video (save runs with --save-state)"
        )
    # settings: the saved ones apply; a different one typed now is refused, never ignored
    conflicts = []
    for dest, value in given_settings(args).items():
        name, _ = SETTINGS[dest]
        saved = getattr(config, name)
        if dest == "steps":
            value = parse_steps(value)
        if value != saved:
            flag = "--" + dest.replace("_", "-")
            shown = ",".join(f"{s:g}" for s in saved) if dest == "steps" else saved
            conflicts.append(f"{flag} {shown} (you gave {getattr(args, dest)})")
    if conflicts:
        raise AdaStateError(
            f"{state} continues a run made with " + ", ".join(conflicts) + "; a resumed run "
            "always keeps its saved settings: drop those flags, or start a new video"
        )
    try:
        schedule = [TimedPrompt(float(s), str(t)) for s, t in json.loads(extra["schedule"])]
        frames_written = int(extra["frames_written"])
    except (KeyError, ValueError, TypeError):
        raise AdaStateError(f"{state} lacks its prompt or progress: it is damaged") from None
    typed, where = _read_schedule(args)
    if typed is not None and prompt_string(typed) != prompt_string(schedule):
        raise AdaStateError(
            f"{state} continues the prompt {prompt_string(schedule)!r}; {where} gives another. "
            "A resumed run keeps its prompt: drop it, or start a new video"
        )
    out = _resumed_output(args, state, extra)
    saved_total = int(extra["chunks"]) if extra.get("chunks", "").isdigit() else None
    total = total_chunks(args, config, default=saved_total)
    job = Job(schedule, out, config, total, resume=state, frames_written=frames_written)
    if os.path.islink(out):
        raise OutputError(f"{out} is a symbolic link; a run never writes through one")
    if not existing(out):
        raise OutputError(
            f"the video this run state continues, {out}, is missing; it cannot be continued "
            "(the state is only useful with its video): start a new video"
        )
    info = video_info(out)
    if info is None or not info.ours:
        raise OutputError(
            f"{out} is not a video adastate made (no stored prompt and settings); this run "
            f"state continues another one: give the right --out, or start a new video"
        )
    differs = info.differs(*job.identity)
    if differs:
        raise OutputError(
            f"{out} holds another video than the one {state} continues: its "
            + ", ".join(differs)
            + f" differ(s) (it holds {info.prompt!r}, seed {info.seed}; the state continues "
            f"{prompt_string(schedule)!r}, seed {config.seed}). Give the run's own video with "
            "--out, or start a new video"
        )
    if index >= total:
        job.notes.append(f"{out} already has {index} chunks (asked {total}): nothing to add")
    return job


def _resumed_output(args, state: Path, extra: dict[str, str]) -> Path:
    if args.out:
        return Path(args.out)
    candidates = []
    if extra.get("out_abs"):
        candidates.append(Path(extra["out_abs"]))
    if extra.get("out_rel"):
        candidates.append(state.parent / extra["out_rel"])
    if extra.get("out"):  # states written before 0.2 stored --out as typed
        candidates += [Path(extra["out"]), state.parent / extra["out"]]
    for path in candidates:
        if existing(path):
            return path
    if candidates:
        return candidates[0]
    raise AdaStateError(f"{state} does not say which video it continues; give it with --out")


def plan(args) -> tuple[list[Job], list[str]]:
    """Every video of the request, checked: settings, lengths, prompts, outputs. Nothing is
    loaded or written. -> (jobs to run, messages for the user)."""
    from .io import format_of
    from .prompts import read_batch_lines, slug

    notes: list[str] = []
    init = getattr(args, "init_image", None) or getattr(args, "init_video", None)
    if getattr(args, "init_frames", None) is not None and not getattr(args, "init_video", None):
        raise AdaStateError("--init-frames says how much of --init-video to use; give --init-video")
    if init and (args.resume or args.prompts):
        raise AdaStateError(
            "--init-image / --init-video start one new video; they cannot be used with "
            + ("--resume (a resumed run continues its own frames)" if args.resume else "--prompts")
        )
    if args.resume:
        if args.prompts:
            raise AdaStateError("--resume continues one video; it cannot be used with --prompts")
        job = _resume_job(args)
        fmt = format_of(job.out)
        check_writer_options(fmt, args.fps, args.crf)
        return ([] if job.notes else [job]), job.notes
    config = stream_config(args)
    total = total_chunks(args, config)
    if args.prompts:
        batch = read_batch_lines(args.prompts)
        out_dir = Path(args.out or "adastate_out")
        if out_dir.suffix and not out_dir.is_dir():
            raise AdaStateError(f"with --prompts, --out is a folder for the videos, not {out_dir}")
        if args.save_state:
            raise AdaStateError(
                "--save-state saves the run of one video; a batch redoes an unfinished video "
                "from its start when run again, so leave it out with --prompts"
            )
        fmt = args.format
        check_writer_options(fmt, args.fps, args.crf)
        jobs = []
        for i, (line, sched) in enumerate(batch):
            where = f"{args.prompts} line {line}"
            check_texts(sched, where)
            notes += check_switches(config, sched, total, where)
            out = out_dir / f"{i + 1:04d}_{slug(sched[0].text)}.{fmt}"
            job = Job(sched, out, config, total, label=f"[{i + 1}/{len(batch)}] ", where=where)
            found = existing(out)
            if found:
                info = video_info(out)
                expected = config.frames_after(total)
                if info is not None and info.ours:
                    differs = info.differs(*job.identity)
                    if not differs and info.frames == expected:
                        notes.append(f"skip {out}: finished (same prompt, seed and settings)")
                        continue
                    why = (
                        f"another {', '.join(differs)}"
                        if differs
                        else f"an unfinished video ({info.frames} of {expected} frames)"
                    )
                    notes.append(f"redo {out}: it holds {why}")
                    job.replace = True
                elif args.overwrite:
                    job.replace = True
                else:
                    raise OutputError(
                        f"{out} exists and was not made by adastate; move it away or pass "
                        "--overwrite to replace it"
                    )
            jobs.append(job)
        return jobs, notes
    schedule, where = _read_schedule(args)
    if schedule is None:
        raise AdaStateError("give a prompt: --prompt TEXT, --schedule FILE or --prompts FILE")
    check_texts(schedule, where)
    notes += check_switches(config, schedule, total, where)
    if args.out:
        out = Path(args.out)
        fmt = format_of(out)
    else:
        fmt = args.format
        out = free_name(Path.cwd(), f"adastate_{slug(schedule[0].text, 30)}_{config.seed}", fmt)
    check_writer_options(fmt, args.fps, args.crf)
    job = Job(schedule, out, config, total)
    if init:
        notes += _attach_prefix(args, job, Path(init))
    found = existing(out)
    if found:
        if not args.overwrite:
            raise _refuse_existing(out, found)
        job.replace = True
    return [job], notes


def _attach_prefix(args, job: Job, init: Path) -> list[str]:
    """Read and fit the init image / video now (a bad file is refused before any model
    loads); the video must go on past it."""
    from .prefix import read_prefix

    config = job.config
    video = bool(getattr(args, "init_video", None))
    if init.resolve() == job.out.resolve():
        raise AdaStateError(f"the output {job.out} is the init file itself; write a new file")
    frames = read_prefix(init, config.height, config.width, args.init_frames if video else None)
    latents = 1 + (frames.shape[0] - 1) // 4
    whole = latents // config.chunk
    if job.total <= whole:
        have = frames.shape[0] / args.fps
        raise AdaStateError(
            f"the video would end inside the init {'video' if video else 'image'} "
            f"({frames.shape[0]} frames, {have:.2f} s = {whole} whole chunks); ask for a "
            f"longer video (--seconds > {have:.2f} or --chunks > {whole}), or use "
            "`adastate extend` to add time to a clip"
        )
    job.prefix, job.prefix_source = frames, init.name
    notes = []
    if video and latents > config.window + config.chunk:
        notes.append(
            f"the init video gives {latents} latent frames: the stream keeps its last "
            f"{config.window} (and the anchor), as it would after generating them"
        )
    return notes


def extend_args(args: argparse.Namespace) -> argparse.Namespace:
    """`adastate extend VIDEO --seconds S`: generate's arguments for a new file that starts
    with VIDEO and goes on for S more seconds (or --chunks more chunks), with VIDEO's stored
    prompt, seed and settings unless given."""
    from .io import VideoIOError, count_frames, format_of, read_metadata
    from .prefix import usable_frames

    video = Path(args.video).expanduser()
    if not video.is_file():
        raise AdaStateError(f"video not found: {video}")
    if args.resume or args.prompts or getattr(args, "init_image", None):
        raise AdaStateError(
            "extend continues one video; leave out --resume, --prompts and --init-image"
        )
    try:
        meta = read_metadata(video)
        count = count_frames(video)
    except (VideoIOError, OSError, ValueError) as err:
        raise AdaStateError(f"{video} is not a readable video ({err})") from None
    if count < 1:
        raise AdaStateError(f"{video} has no frames")
    ours = str(meta.get("generator", "")).startswith("adastate")
    if args.prompt is None and args.schedule is None:
        if not (ours and meta.get("prompt")):
            raise AdaStateError(
                f"{video} carries no adastate prompt (it was not made by adastate): give "
                "--prompt TEXT"
            )
        args.prompt = meta["prompt"]
    if ours and meta.get("settings"):
        try:
            saved = json.loads(meta["settings"])
        except ValueError:
            saved = {}
        fields = {"height": "height", "width": "width", "policy": "anchor", "chunk": "chunk",
                  "state": "state", "window": "window", "anchor_frames": "anchor_frames",
                  "ema_alpha": "ema_alpha", "shift": "shift", "seed": "seed"}  # fmt: skip
        for key, dest in fields.items():
            if getattr(args, dest, None) is None and key in saved:
                setattr(args, dest, saved[key])
        if args.steps is None and "steps" in saved:
            args.steps = ",".join(f"{v:g}" for v in saved["steps"])
    used = usable_frames(count, args.init_frames)
    args.init_video, args.init_image = str(video), None
    config = stream_config(args)
    whole = (1 + (used - 1) // 4) // config.chunk
    if args.chunks is not None:
        if args.chunks < 1:
            raise AdaStateError(f"--chunks must be >= 1, got {args.chunks}")
        args.chunks = whole + args.chunks
    elif args.seconds is not None:
        if not math.isfinite(args.seconds) or args.seconds <= 0:
            raise AdaStateError(f"--seconds must be a finite number > 0, got {args.seconds:g}")
        args.seconds = used / args.fps + args.seconds
    else:
        raise AdaStateError("say how much longer: --seconds N or --chunks N")
    if not args.out:
        fmt = (
            format_of(video) if format_of(video) in ("mp4", "webm", "gif", "webp") else args.format
        )
        args.out = str(free_name(video.parent, f"{video.stem}_extended", fmt))
    return args


def check_state_path(path: Path | None, jobs: list[Job], model_files: list[Path]) -> None:
    """--save-state may only name a new file or an AdaState run state, never the video or a
    model in use."""
    from .stream import is_stream_state

    if path is None:
        return
    if path.is_dir():
        raise AdaStateError(
            f"--save-state {path} is a folder; give a file name such as run.safetensors"
        )
    if os.path.islink(path):
        raise AdaStateError(f"--save-state {path} is a symbolic link; give a plain file")
    target = path.resolve()
    for job in jobs:
        if target == job.out.resolve():
            raise AdaStateError(
                f"--save-state {path} is the video itself; give the run state its own file, "
                "e.g. run.safetensors"
            )
    for model in model_files:
        if target == Path(model).resolve():
            raise AdaStateError(f"--save-state {path} is a model file in use; choose another file")
    if path.exists() and not is_stream_state(path):
        raise AdaStateError(
            f"--save-state {path} exists and is not an AdaState run state; it is never "
            "replaced: choose another file"
        )


def probe_folder(folder: Path, what: str) -> None:
    """Fail now, not after a chunk, if `folder` cannot take new files."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            folder / f".adastate_write_test.{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_EXCL
        )
        os.close(fd)
        os.unlink(folder / f".adastate_write_test.{os.getpid()}")
    except OSError as err:
        raise AdaStateError(f"cannot write {what} into {folder}: {err.strerror or err}") from None


def check_device(name: str):
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise AdaStateError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AdaStateError(
                "--device cuda: this PyTorch has no CUDA GPU available (a CPU build, or no "
                "driver); install a CUDA build of torch, or use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AdaStateError(
                f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type != "cpu" and device.type != "mps":
        raise AdaStateError(f"--device {name!r} is not supported; use cpu or cuda")
    return device


def check_memory(args, device, dit_ckpt, vae_dim: int, jobs: list[Job]) -> None:
    """Refuse, with the numbers, a request whose working set cannot fit on the device."""
    import torch

    from .memory import available_bytes, stream_bytes

    if args.no_memory_check:
        return
    from .model.loader import as_dtype, default_compute_dtype

    compute = as_dtype(args.dtype) or default_compute_dtype(device)
    vae_dtype = as_dtype(args.vae_dtype) or (
        torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    params = dit_ckpt.num_params()
    worst = max(
        (
            stream_bytes(dit_ckpt.config, params, job.config, compute, vae_dtype, vae_dim)
            for job in jobs
        ),
        key=lambda parts: parts["total"],
    )
    free = available_bytes(device)
    if free is not None and worst["total"] > free:
        gib = 2**30
        parts = ", ".join(f"{k} {v / gib:.2f} GiB" for k, v in worst.items() if k != "total")
        raise AdaStateError(
            f"this video needs about {worst['total'] / gib:.1f} GiB on {device} ({parts}) but "
            f"only {free / gib:.1f} GiB is free; make it smaller (--height/--width, --chunk, "
            "--window), use --dtype bf16 / --vae-dtype bf16, or skip this check with "
            "--no-memory-check"
        )


# -- running -------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    jobs, notes = plan(args)
    for folder in sorted({job.out.parent for job in jobs}):
        probe_folder(folder, "the output")
    for note in notes:
        print(f"adastate: {note}", file=sys.stderr)
    if not jobs:
        print("adastate: nothing to do", file=sys.stderr)
        return 0
    with contextlib.ExitStack() as locks:
        for job in jobs:  # held for the whole run: a second process is refused at once
            locks.enter_context(OutputLock(job.out))
        return _run_locked(args, jobs)


def _run_locked(args, jobs: list[Job]) -> int:
    from .locate import find_models
    from .model import load_dit, read_checkpoint
    from .text.encoder import read_text_checkpoint
    from .vae import load_vae
    from .vae.loader import read_vae_checkpoint

    files = find_models(args.models_dir, dit=args.dit, vae=args.vae, text_encoder=args.text_encoder)
    for note in files.notes:
        print(f"adastate: note: {note}", file=sys.stderr)
    state_path = Path(args.save_state) if args.save_state else None
    check_state_path(state_path, jobs, [files.dit, files.vae, files.text_encoder])
    device = check_device(args.device)
    # header-only checks of the three files (milliseconds; nothing is loaded)
    dit_ckpt = read_checkpoint(files.dit)
    vae_ckpt = read_vae_checkpoint(files.vae)
    priming = any(job.prefix is not None for job in jobs)
    if priming:
        read_vae_checkpoint(files.vae, part="encoder")  # the init frames need the encoder
    text_ckpt = read_text_checkpoint(files.text_encoder)
    width = text_ckpt.config.get("d_model")
    if width is not None and width != dit_ckpt.config.text_dim:
        raise AdaStateError(
            f"the text encoder {files.text_encoder.name} makes {width}-wide embeddings but the "
            f"DiT {files.dit.name} takes {dit_ckpt.config.text_dim}: they do not belong "
            "together (Wan2.1 uses umT5-XXL)"
        )
    check_memory(args, device, dit_ckpt, vae_ckpt.dim, jobs)
    if state_path is not None:
        probe_folder(state_path.parent, f"the run state {state_path.name}")
    cache_dir = (
        Path(args.cache_dir).expanduser()
        if args.cache_dir
        else Path.home() / ".cache" / "adastate" / "embeddings"
    )
    texts = sorted({p.text for job in jobs for p in job.schedule})
    rows = _encode(args, files, cache_dir, texts)
    model = load_dit(
        files.dit, dtype=args.dtype, device=device, attention=args.attention,
        precise_dtype=getattr(args, "residual", None) or "fp32",
    )  # fmt: skip
    if getattr(args, "compile", False):
        model.compile_blocks()
    vae = load_vae(files.vae, dtype=args.vae_dtype, device=device)
    encoder = None
    if priming:
        from .vae import load_vae_encoder

        encoder = load_vae_encoder(files.vae, dtype=args.vae_dtype, device=device)
    failed = []
    for job in jobs:
        try:
            stopped = run_job(
                args, model, vae, rows.__getitem__, job, state_path or job.resume, encoder
            )
        except AdaStateError as err:
            if len(jobs) == 1:
                raise
            # one bad video does not stop a batch: name it, go on, fail at the end
            failed.append(job)
            print(
                f"adastate: error: {job.label}{job.out.name} ({job.where}): {err}", file=sys.stderr
            )
            continue
        if stopped:
            return 130
    if failed:
        raise AdaStateError(
            f"{len(failed)} of {len(jobs)} videos failed: "
            + ", ".join(f"{j.out.name} ({j.where})" for j in failed)
        )
    return 0


def _encode(args, files, cache_dir: Path, texts: list[str]) -> dict:
    from .text import encode_prompts

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = encode_prompts(
            texts, files.text_encoder, cache_dir=cache_dir, tokenizer=args.tokenizer,
            device=args.device,
        )  # fmt: skip
    for w in caught:
        print(f"adastate: warning: {w.message}", file=sys.stderr)
    return dict(zip(texts, rows))


def run_job(args, model, vae, embed, job: Job, state_path: Path | None, encoder=None) -> bool:
    """Make one video under a lock on its output; True if it was stopped early (Ctrl-C)."""
    from .cli import ProgressBar, graceful_interrupt
    from .io import OutputExistsError, open_writer
    from .pipeline import generate, load_run
    from .stream import PromptSchedule, init_stream

    out = job.out  # the caller holds the output's lock
    if job.resume is None:
        found = existing(out)
        if found and not job.replace:  # appeared since the plan: another program's
            raise _refuse_existing(out, found, check_lock=False)
        if job.replace:
            remove(out)
    config = job.config
    if job.resume is not None:
        stream, vae_cache, frames_written, _ = load_run(model, job.resume, device=model.device)
    else:
        stream, vae_cache, frames_written = None, None, 0
    prompts = PromptSchedule.from_seconds(
        config, [(p.seconds, embed(p.text)) for p in job.schedule], recache=args.recache
    )
    if stream is None:
        stream = init_stream(model, prompts.at(0), config)
    prompt, seed, settings = job.identity
    metadata = {
        "prompt": prompt, "seed": seed, "anchor": config.policy, "settings": settings,
        "generator": "adastate",
    }  # fmt: skip
    if job.prefix is not None:
        metadata["init"] = f"{job.prefix_source} ({job.prefix.shape[0]} frames)"
    state_meta = {
        "schedule": json.dumps([(p.seconds, p.text) for p in job.schedule]),
        "chunks": str(job.total),
    }
    if state_path is not None:
        absolute = out.resolve()
        state_meta["out_abs"] = str(absolute)
        state_meta["out_rel"] = os.path.relpath(absolute, state_path.resolve().parent)
    bar = ProgressBar(job.total, job.label)
    result = None
    try:
        writer = open_writer(
            out, fps=args.fps, crf=args.crf, metadata=metadata,
            resume_frames=frames_written, exclusive=job.resume is None,
            preset=getattr(args, "preset", None),
        )  # fmt: skip
    except OutputExistsError:
        raise _refuse_existing(out, existing(out), check_lock=False) from None
    skip = 0
    try:
        with graceful_interrupt() as should_stop, writer:
            if job.prefix is not None:
                from .prefix import encode_frames, start_from

                latents = encode_frames(encoder, job.prefix)
                started = start_from(
                    model, vae, stream, latents, job.prefix, writer.write,
                    output=getattr(args, "init_output", "original"),
                )  # fmt: skip
                stream, vae_cache = started.stream, started.vae_cache
                frames_written, skip = started.frames_written, started.skip_frames
            result = generate(
                model, vae, stream, writer, total_chunks=job.total, prompts=prompts,
                vae_cache=vae_cache, frames_written=frames_written, state_path=state_path,
                state_meta=state_meta, on_chunk=bar, should_stop=should_stop, skip_frames=skip,
            )  # fmt: skip
    except KeyboardInterrupt:
        bar.close()
        _stopped_hint(out, writer.frames_written, state_path)
        raise
    except BaseException:
        if job.resume is None and writer.frames_written == 0:
            remove(out)  # our own empty file: nothing of the run reached it
        raise
    finally:
        bar.close()
    if result.stopped and result.chunks < job.total:
        _stopped_hint(out, result.frames_written, state_path, result.chunks)
        return True
    rate = result.frames_written / result.seconds if result.seconds else 0.0
    print(
        f"wrote {_describe_output(out, result.frames_written)}: {result.frames_written} frames "
        f"({result.chunks} chunks) at {rate:.1f} frames/s"
    )
    return False


def _describe_output(out: Path, frames: int) -> str:
    if out.suffix.lower() == ".png" and frames:
        from .io.video import PNG_DIGITS

        return f"{out.stem}_{1:0{PNG_DIGITS}d}.png … {out.stem}_{frames:0{PNG_DIGITS}d}.png"
    return str(out)


def _stopped_hint(
    out: Path, frames: int, state_path: Path | None, chunks: int | None = None
) -> None:
    done = f"after chunk {chunks}" if chunks is not None else "during a chunk"
    hint = (
        f"; continue with --resume {state_path}"
        if state_path is not None
        else " (pass --save-state FILE to be able to resume)"
    )
    print(f"adastate: stopped {done}: {frames} frames in {out}{hint}", file=sys.stderr)
