"""`adastate train`: check everything, plan memory, embed prompts, load, train, save.

Order (every refusal is a message, before the text encoder or a DiT loads): settings -> model
file headers (the loader's refusals: I2V, Wan2.2, VAE files...) -> OUT folder (a new run needs
a new or empty folder; --resume needs the run's own state and settings) -> prompts -> memory
plan (--dry-run stops here) -> prompt embeddings (the encoder is freed) -> models -> training.
Under torchrun every process trains its share of each batch; only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from ..errors import AdaStateError

REAL_TEXT_DIM = 4096  # umT5-XXL


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="fine-tune a causal checkpoint into an AdaState model (horizon-weighted DMD)",
        description="Horizon-weighted DMD fine-tuning (AdaState paper Eq. 5): the generator "
        "rolls out the AdaState stream, a frozen teacher and a trained critic score its "
        "content frames, later frames weigh more. Ctrl-C saves and stops; --resume continues.",
    )
    m = p.add_argument_group("models")
    m.add_argument("--generator", required=True, help="causal checkpoint (self_forcing_dmd.pt)")
    m.add_argument("--critic", required=True, help="fake score: base Wan2.1-T2V-1.3B")
    m.add_argument("--teacher", required=True, help="real score: Wan2.1-T2V-14B (frozen)")
    m.add_argument(
        "--teacher-dtype", default=None, choices=["bf16", "fp16", "fp8_e4m3fn"],
        help="how the frozen teacher is held (default: bf16; an fp8 file stays fp8)",
    )  # fmt: skip
    d = p.add_argument_group("prompts")
    d.add_argument("--prompts", metavar="FILE", help="training prompts, one per line")
    d.add_argument("--embeddings", metavar="FILE", help="precomputed training embeddings")
    d.add_argument("--text-encoder", help="umt5_xxl_fp8_e4m3fn_scaled / umt5_xxl_fp16")
    d.add_argument("--tokenizer", help="tokenizer folder (only for the official .pth encoder)")
    d.add_argument("--cache-dir", help="prompt embedding cache (default ~/.cache/adastate)")
    d.add_argument(
        "--save-embeddings", metavar="FILE",
        help="embed every prompt of --prompts (and the negative prompt) into FILE for "
        "--embeddings, then stop (e.g. on a machine with room for the text encoder)",
    )  # fmt: skip
    d.add_argument(
        "--pseudo-text", action="store_true",
        help="SMOKE RUNS ON TINY RANDOM MODELS ONLY: stand-in embeddings, no text encoder",
    )  # fmt: skip
    p.add_argument("--out", help="run folder (new or empty; --resume: the run's)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--dry-run", action="store_true", help="print the memory plan and stop")
    p.add_argument("--no-memory-check", action="store_true", help="start even if it won't fit")
    o = p.add_argument_group("optimisation (defaults: the paper / Self-Forcing)")
    o.add_argument("--iterations", type=int, default=1000, help="critic updates (1000)")
    o.add_argument("--batch", type=int, default=4)
    o.add_argument("--micro-batch", type=int, default=1, help="samples per forward (1)")
    o.add_argument("--gen-every", type=int, default=5, help="generator update every N (5)")
    o.add_argument("--alpha", type=float, default=2.0, help="horizon weight slope (2; 4 long)")
    o.add_argument("--guidance", type=float, default=3.0, help="teacher: cond + g(cond-uncond)")
    o.add_argument("--gen-lr", type=float, default=2e-6)
    o.add_argument("--critic-lr", type=float, default=4e-7)
    o.add_argument("--weight-decay", type=float, default=0.01)
    o.add_argument("--clip", type=float, default=10.0)
    o.add_argument("--ema-decay", type=float, default=0.99)
    o.add_argument("--ema-start", type=int, default=200)
    o.add_argument("--chunks", type=int, default=7, help="rollout chunks (7 -> 21 frames)")
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--normaliser", default="sample", choices=["sample", "frame"])
    o.add_argument(
        "--leak-content-kv", action="store_true",
        help="ablation: Self-Forcing's cross-chunk gradient through cached content K/V",
    )  # fmt: skip
    o.add_argument("--no-checkpointing", action="store_true", help="keep all activations")
    s = p.add_argument_group("stream (the rollout; defaults: the paper)")
    from ..stream.config import POLICIES

    s.add_argument("--anchor", default="adaptive", choices=POLICIES)
    s.add_argument("--chunk", type=int, default=3)
    s.add_argument("--state", type=int, default=1)
    s.add_argument("--window", type=int, default=3)
    s.add_argument("--anchor-frames", type=int, default=1)
    s.add_argument("--ema-alpha", type=float, default=0.999)
    s.add_argument("--steps", default="1000,750,500,250")
    s.add_argument("--shift", type=float, default=5.0)
    s.add_argument("--height", type=int, default=480)
    s.add_argument("--width", type=int, default=832)
    r = p.add_argument_group("run")
    r.add_argument("--device", default=None, help="default cuda (cuda:LOCAL_RANK) if present")
    r.add_argument("--dtype", default=None, choices=["fp32", "bf16"], help="compute dtype")
    r.add_argument("--save-every", type=int, default=100, help="checkpoint every N iterations")
    r.add_argument("--save-dtype", default="bf16", choices=["fp32", "bf16", "fp16"],
                   help="dtype of adastate_dmd.safetensors (the .pt is always fp32)")  # fmt: skip
    r.add_argument("--sample-every", type=int, default=0, help="sample videos every N (0: off)")
    r.add_argument("--vae", help="wan_2.1_vae.safetensors (for sample videos)")
    r.add_argument("--sample-prompts", type=int, default=2, help="first N prompts are sampled")
    r.add_argument("--sample-seconds", type=float, default=5.0)
    r.add_argument(
        "--replicate", action="store_true",
        help="under torchrun: full copies of the models on every GPU (sum gradients) instead "
        "of FSDP2 sharding",
    )  # fmt: skip
    r.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.set_defaults(func=run)
    return p


# ----------------------------------------------------------------------------------------------
# checks before anything loads


def train_config(args):
    from ..stream import StreamConfig
    from ..stream.config import parse_steps
    from .config import TrainConfig

    stream = StreamConfig(
        height=args.height,
        width=args.width,
        policy=args.anchor,
        chunk=args.chunk,
        state=args.state,
        window=args.window,
        anchor_frames=args.anchor_frames,
        ema_alpha=args.ema_alpha,
        steps=parse_steps(args.steps),
        shift=args.shift,
        seed=0,
    )
    return TrainConfig(
        iterations=args.iterations,
        batch=args.batch,
        micro_batch=args.micro_batch,
        gen_every=args.gen_every,
        alpha=args.alpha,
        guidance=args.guidance,
        gen_lr=args.gen_lr,
        critic_lr=args.critic_lr,
        weight_decay=args.weight_decay,
        clip=args.clip,
        ema_decay=args.ema_decay,
        ema_start=args.ema_start,
        chunks=args.chunks,
        seed=args.seed,
        leak_content_kv=args.leak_content_kv,
        normaliser=args.normaliser,
        checkpointing=not args.no_checkpointing,
        stream=stream,
    )


def read_headers(args) -> dict:
    from ..model.loader import read_checkpoint

    out = {}
    for role in ("generator", "critic", "teacher"):
        path = getattr(args, role)
        try:
            out[role] = read_checkpoint(path)
        except AdaStateError as err:
            raise AdaStateError(f"--{role}: {err}") from None
    dims = {role: c.config.text_dim for role, c in out.items()}
    if len(set(dims.values())) > 1:
        raise AdaStateError(
            "the three models take different text encoders (text width "
            + ", ".join(f"{r} {d}" for r, d in dims.items())
            + "); all must be Wan2.1 text-to-video models"
        )
    return out


def notes_on_roles(args, headers) -> list[str]:
    notes = []
    g, c, t = (headers[r].config for r in ("generator", "critic", "teacher"))
    same = lambda a, b: Path(a).resolve() == Path(b).resolve()  # noqa: E731
    if t.dim <= g.dim:
        notes.append(
            f"teacher is {t.size_name()} (not larger than the generator): this departs from the "
            "paper, which distils from Wan2.1-T2V-14B"
        )
    if same(args.critic, args.generator):
        notes.append(
            "critic starts from the generator's own (causal) checkpoint; the paper starts it "
            "from base Wan2.1-T2V-1.3B"
        )
    if headers["critic"].raw.container:
        notes.append(
            f"critic file is a training checkpoint ('{headers['critic'].raw.container}' read); "
            "the paper's critic is base Wan2.1-T2V-1.3B"
        )
    if c.dim != g.dim:
        notes.append(f"critic is {c.size_name()}, generator {g.size_name()}")
    return notes


def check_out(args, config) -> dict | None:
    """New run: OUT must be new or empty. --resume: OUT must hold this run's state and
    settings. Returns run.json's content on resume."""
    from ..generate_cmd import probe_folder
    from .files import RUN_JSON, TRAIN_STATE

    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise AdaStateError(f"--out {out} is a file; give a folder for the run")
    if args.resume:
        if not (out / TRAIN_STATE).is_file() or not (out / RUN_JSON).is_file():
            raise AdaStateError(
                f"--resume: {out} holds no training run ({TRAIN_STATE} / {RUN_JSON} missing); "
                "give the --out of the run to continue, or start a new run without --resume"
            )
        try:
            run = json.loads((out / RUN_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise AdaStateError(f"{out / RUN_JSON} is damaged ({err})") from None
        saved = run.get("identity", {})
        wanted = json.loads(json.dumps(config.identity()))
        if saved != wanted:
            diffs = _diffs(saved, wanted)
            raise AdaStateError(
                "--resume: the run in "
                f"{out} was made with other settings ({'; '.join(diffs[:6])}); resume with "
                "the run's own settings (see run.json) or start a new run in a new folder"
            )
        probe_folder(out, "the run folder")
        return run
    if out.exists() and any(out.iterdir()):
        raise AdaStateError(
            f"--out {out} is not empty; a new run needs a new or empty folder (nothing in it is "
            "ever overwritten). To continue the run saved there, add --resume"
        )
    probe_folder(out, "the run folder")
    return None


def _diffs(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(saved) | set(wanted)):
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diffs(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, asked {b!r}")
    return out


def check_prompts(args, headers) -> tuple[list[str], object]:
    from .data import load_embeddings, read_prompt_file

    text_dim = headers["generator"].config.text_dim
    if bool(args.prompts) == bool(args.embeddings):
        raise AdaStateError("give either --prompts FILE (one per line) or --embeddings FILE")
    if args.embeddings:
        prompts, emb, neg = load_embeddings(args.embeddings)
        if neg.shape[-1] != text_dim:
            raise AdaStateError(
                f"--embeddings holds {neg.shape[-1]}-wide rows; the models take {text_dim}"
            )
        return prompts, (emb, neg)
    prompts = read_prompt_file(args.prompts)
    if args.pseudo_text:
        if text_dim == REAL_TEXT_DIM:
            raise AdaStateError(
                "--pseudo-text makes meaningless stand-in embeddings for tiny random test "
                "models; a real Wan model needs --text-encoder umt5_xxl_fp8_e4m3fn_scaled."
                "safetensors (or --embeddings)"
            )
    elif not args.text_encoder:
        raise AdaStateError(
            "--prompts needs --text-encoder (umt5_xxl_fp8_e4m3fn_scaled.safetensors or "
            "umt5_xxl_fp16.safetensors) to embed them, or use --embeddings FILE"
        )
    elif not Path(args.text_encoder).expanduser().exists():
        raise AdaStateError(f"--text-encoder: file not found: {args.text_encoder}")
    return prompts, None


# ----------------------------------------------------------------------------------------------
# memory


def memory_plan(args, config, headers, device):
    import torch

    from ..model.loader import FP8_DTYPES, as_dtype, default_compute_dtype
    from .plan import ModelInfo, held_bytes, plan_memory

    compute = as_dtype(args.dtype) or default_compute_dtype(device)
    t = headers["teacher"]
    stored = max(t.stored_dtypes(), key=t.stored_dtypes().get)
    keep_fp8 = args.teacher_dtype in (None, "fp8_e4m3fn")
    held = 1.0 if args.teacher_dtype == "fp8_e4m3fn" else held_bytes(stored, compute, keep_fp8)
    if args.teacher_dtype in ("bf16", "fp16"):
        held = 2.0
    info = {
        role: ModelInfo(headers[role].config, headers[role].num_params(), 16.0)
        for role in ("generator", "critic")
    }
    return plan_memory(
        config,
        info["generator"],
        info["critic"],
        ModelInfo(t.config, t.num_params(), held),
        compute_bytes=torch.empty(0, dtype=compute).element_size(),
        gpu=device.type == "cuda",
    ), stored in FP8_DTYPES


def fit_or_refuse(plan, device, world: int, teacher_fp8: bool, args) -> list[str]:
    from ..memory import available_bytes

    free = available_bytes(device)
    lines = plan.lines(free)
    if args.no_memory_check or free is None or plan.peak <= free:
        return lines
    options = []
    if not teacher_fp8 and args.teacher_dtype != "fp8_e4m3fn":
        options.append("hold the teacher in fp8 (--teacher-dtype fp8_e4m3fn, or an fp8 file)")
    options.append("use the 1.3B base as a cheaper teacher (departs from the paper)")
    options.append(
        f"more GPUs: torchrun --nproc_per_node N -m adastate_core train ... (now {world})"
    )
    if args.micro_batch > 1:
        options.append("--micro-batch 1")
    raise AdaStateError(
        "this training run does not fit on "
        f"{device}:\n"
        + "\n".join(lines)
        + "\noptions: "
        + "; ".join(options)
        + " (or --no-memory-check to try anyway)"
    )


# ----------------------------------------------------------------------------------------------
# the run


def _stop_on_ctrl_c():
    from ..cli import graceful_interrupt

    # SIGTERM too: torchrun passes a Ctrl-C on to its workers as SIGTERM
    return graceful_interrupt(
        "train: saving after this iteration, then stopping (Ctrl-C again to abort without saving)",
        (signal.SIGINT, signal.SIGTERM),
    )


def _world():
    from .trainer import World

    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size)


def _device(args, world):
    import torch

    from ..generate_cmd import check_device

    name = args.device
    if name is None:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        name = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    return check_device(name)


def embed(args, prompts, indices, text_dim, precomputed):
    """-> ({index: rows}, negative rows) for the prompts the run uses."""
    from .dmd import NEGATIVE_PROMPT

    if precomputed is not None:
        emb, neg = precomputed
        missing = [i for i in indices if i not in emb]
        if missing:
            raise AdaStateError(
                f"--embeddings lacks {len(missing)} of the prompts this run uses (e.g. prompt "
                f"{missing[0]}); make the file for all prompts"
            )
        return {i: emb[i] for i in indices}, neg
    if args.pseudo_text:
        from ..pipeline import pseudo_embedding

        rows = {i: pseudo_embedding(prompts[i], 7, text_dim)[0] for i in indices}
        return rows, pseudo_embedding(NEGATIVE_PROMPT, 7, text_dim)[0]
    from ..text import encode_prompts

    cache = Path(args.cache_dir or Path.home() / ".cache" / "adastate" / "embeddings")
    texts = [prompts[i] for i in indices] + [NEGATIVE_PROMPT]
    vectors = encode_prompts(texts, args.text_encoder, cache_dir=cache, tokenizer=args.tokenizer)
    return dict(zip(indices, vectors[:-1])), vectors[-1]


def run(args) -> int:
    import torch

    from .config import TrainConfig  # noqa: F401  (settings errors come first)

    config = train_config(args)
    if args.save_every < 1 or args.sample_every < 0 or args.sample_prompts < 0:
        raise AdaStateError("--save-every must be >= 1, --sample-every and --sample-prompts >= 0")
    headers = read_headers(args)
    notes = notes_on_roles(args, headers)
    world = _world()
    device = _device(args, world)
    if config.batch % world.size and world.rank == 0:
        notes.append(f"batch {config.batch} over {world.size} processes: some take one sample more")
    if config.batch < world.size:
        raise AdaStateError(f"--batch {config.batch} is smaller than the {world.size} processes")
    if world.size > 1 and not args.replicate and config.batch % world.size:
        raise AdaStateError(
            f"--batch {config.batch} does not split evenly over {world.size} processes: with "
            "FSDP sharding every process must run the same number of micro-batches; use a "
            f"batch divisible by {world.size}, or --replicate"
        )
    # a new run's folder is rank 0's to check: another rank would race with its probe file
    # (a moment in which the folder is not empty); on --resume every rank needs run.json
    check = world.rank == 0 or (args.resume and not args.dry_run)
    if not args.out and not args.save_embeddings:
        raise AdaStateError("--out FOLDER is needed: the run's checkpoints and log go there")
    resumed = check_out(args, config) if check and not args.save_embeddings else None
    prompts, precomputed = check_prompts(args, headers)
    if args.save_embeddings:
        return _save_embeddings(args, prompts, precomputed, headers)
    if args.sample_every and not args.vae:
        raise AdaStateError("--sample-every needs --vae (wan_2.1_vae.safetensors)")
    plan, teacher_fp8 = memory_plan(args, config, headers, device)
    lines = fit_or_refuse(plan, device, world.size, teacher_fp8, args)
    say = _say(world)
    say(f"memory plan on {device} (a model of the peak, not a measurement):")
    for line in lines:
        say(line)
    for note in notes:
        say(f"note: {note}")
    if args.dry_run:
        return 0

    from .data import PromptData, used_indices

    start = 0
    if resumed is not None:
        start = int(resumed.get("step", 0))
    indices = used_indices(config, len(prompts), start)
    samples = list(range(min(args.sample_prompts, len(prompts)))) if args.sample_every else []
    indices = list(dict.fromkeys(indices + samples))
    text_dim = headers["generator"].config.text_dim
    say(f"embedding {len(indices)} of {len(prompts)} prompts (only those the run uses)")
    rows, negative = embed(args, prompts, indices, text_dim, precomputed)
    data = PromptData(prompts, rows, negative, config.seed)

    if world.size > 1 and not torch.distributed.is_initialized():
        # NCCL for the gradients on the GPU, gloo for the small CPU totals and the stop flag
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    trainer = _build_trainer(args, config, data, device, world)
    out = Path(args.out).expanduser()
    return _train(args, trainer, out, resumed, notes, prompts, samples, world, say)


def _save_embeddings(args, prompts, precomputed, headers) -> int:
    import os

    from .data import save_embeddings

    target = Path(args.save_embeddings).expanduser()
    if precomputed is not None:
        raise AdaStateError("--save-embeddings makes a file from --prompts, not --embeddings")
    if os.path.lexists(target):
        raise AdaStateError(f"{target} exists; it is never overwritten: choose another name")
    indices = list(range(len(prompts)))
    rows, negative = embed(args, prompts, indices, headers["generator"].config.text_dim, None)
    save_embeddings(target, prompts, rows, negative)
    print(f"wrote the embeddings of {len(prompts)} prompts (and the negative prompt) to {target}")
    return 0


def _say(world):
    def say(text: str) -> None:
        if world.rank == 0:
            print(f"adastate train: {text}", file=sys.stderr, flush=True)

    return say


def _build_trainer(args, config, data, device, world):
    import torch

    from ..model.loader import as_dtype, default_compute_dtype, load_dit
    from .trainer import Trainer, make_trainable

    compute = as_dtype(args.dtype) or default_compute_dtype(device)
    generator = make_trainable(
        load_dit(args.generator, dtype=compute, weight_dtype=torch.float32, device=device)
    )
    critic = make_trainable(
        load_dit(args.critic, dtype=compute, weight_dtype=torch.float32, device=device)
    )
    teacher = load_dit(args.teacher, dtype=compute, weight_dtype=args.teacher_dtype, device=device)
    return Trainer(generator, critic, teacher, data, config, world=world, shard=not args.replicate)


def _train(args, trainer, out: Path, resumed, notes, prompts, samples, world, say) -> int:

    from ..model.loader import as_dtype
    from . import files
    from .trainer import NonFiniteLossError, run_iterations

    config = trainer.config
    rank0 = world.rank == 0
    if resumed is not None:
        state = files.load_train_state(out / files.TRAIN_STATE)
        trainer.load_state_dict(state)
        del state
        say(f"resumed at iteration {trainer.step} ({trainer.generator_updates} generator updates)")
    log = files.LossLog(out / files.LOG, resume_step=trainer.step) if rank0 else None
    save_dtype = as_dtype(args.save_dtype)
    hints = files.hints(trainer.generator)

    def save(reason: str) -> None:
        # every process takes part in gathering sharded weights; only rank 0 writes
        state = trainer.state_dict()
        weights = trainer.generator_weights(ema=False)
        ema = None if trainer.ema is None else trainer.generator_weights(ema=True)
        if not rank0:
            return
        run_info = {
            "format": "adastate-train-run-v1",
            "identity": config.identity(),
            "config": json.loads(config.to_json()),
            "step": trainer.step,
            "generator_updates": trainer.generator_updates,
            "models": {
                r: str(Path(getattr(args, r)).resolve()) for r in ("generator", "critic", "teacher")
            },
            "prompts": len(prompts),
            "notes": notes,
            "saved": reason,
        }
        files.save_train_state(out, state)
        files.write_checkpoints(
            out,
            weights,
            ema,
            hints,
            save_dtype=save_dtype,
            meta={"iteration": trainer.step, "generator_updates": trainer.generator_updates},
        )
        files._atomic(
            out / files.RUN_JSON, lambda p: Path(p).write_text(json.dumps(run_info, indent=1))
        )
        files.plot_losses(log.entries(), out / files.CURVE)

    if resumed is None:
        save("start")  # run.json + an initial checkpoint: the folder is a run from now on
    bar = _Progress(config.iterations, trainer.step)
    start_time = time.perf_counter()

    def on_iteration(entry: dict) -> None:
        entry["seconds"] = round(time.perf_counter() - start_time, 3)
        if rank0:
            log.append(entry)
            bar(entry)
        if trainer.step % args.save_every == 0 or trainer.step == config.iterations:
            save(f"iteration {trainer.step}")
        if args.sample_every and trainer.step % args.sample_every == 0:
            weights = trainer.generator_weights(ema=True)  # all processes: a gather
            if rank0:
                _samples(args, trainer, weights, out, samples, say)

    with _stop_on_ctrl_c() as should_stop:
        try:
            run_iterations(trainer, config.iterations, on_iteration, should_stop)
        except NonFiniteLossError as err:
            bar.close()
            say(
                f"stopped: {err}. The last good checkpoint in {out} is kept (iteration "
                f"{_saved_step(out)}); lower the learning rates or check the model files, then "
                "--resume"
            )
            return 2
    bar.close()
    if trainer.step < config.iterations:
        save(f"stopped at iteration {trainer.step}")
        say(
            f"stopped at iteration {trainer.step}; saved. Continue with the same command and "
            "--resume"
        )
        return 130
    say(
        f"done: {trainer.step} iterations = {trainer.step} critic updates and "
        f"{trainer.generator_updates} generator updates -> {out / files.INFERENCE_ST} and "
        f"{out / files.INFERENCE_PT}"
    )
    return 0


def _saved_step(out: Path) -> str:
    try:
        return str(json.loads((out / "run.json").read_text())["step"])
    except Exception:
        return "?"


def _samples(args, trainer, weights, out: Path, samples: list[int], say) -> None:
    """Short videos of the first prompts from the EMA generator (the generator before the EMA
    starts), with a fixed seed: the artist-visible proof that training is doing something."""
    import torch

    from ..io import open_writer
    from ..model.loader import load_dit
    from ..pipeline import generate
    from ..stream import init_stream
    from ..vae import load_vae
    from .files import SAMPLES

    gen = trainer.generator
    model = load_dit(weights, dtype=gen.compute_dtype,
                     device=gen.device, **_hint_kwargs(gen))  # fmt: skip
    vae = load_vae(args.vae, device=gen.device)
    folder = out / SAMPLES
    folder.mkdir(exist_ok=True)
    stream_cfg = trainer.config.stream
    total = stream_cfg.chunks_for_seconds(args.sample_seconds)
    for i in samples:
        cond = trainer.data.rows(i)[None].to(gen.device)
        path = folder / f"iter{trainer.step:06d}_prompt{i}.mp4"
        if path.exists():
            continue
        meta = {"prompt": trainer.data.prompts[i], "seed": "0", "settings": stream_cfg.to_json(),
                "generator": f"adastate train sample, iteration {trainer.step}"}  # fmt: skip
        with open_writer(path, fps=16, metadata=meta, exclusive=True) as writer:
            generate(model, vae, init_stream(model, cond, stream_cfg), writer, total_chunks=total)
    del model, vae
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    say(f"samples of iteration {trainer.step} in {folder}")


def _hint_kwargs(model) -> dict:
    c = model.config
    return {"num_heads": c.num_heads, "text_len": c.text_len, "eps": c.eps}


class _Progress:
    """iteration i/N [bar] s/it, ETA and the latest losses on stderr."""

    def __init__(self, total: int, start: int):
        self.total, self.start = total, start
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()
        self.last_gen: float | None = None

    def __call__(self, entry: dict) -> None:
        done = entry["iteration"] + 1
        per = (time.perf_counter() - self.t0) / max(1, done - self.start)
        eta = per * (self.total - done)
        if entry.get("generator_loss") is not None:
            self.last_gen = entry["generator_loss"]
        width = 20
        bar = "#" * int(width * done / self.total) + "." * (width - int(width * done / self.total))
        gen = "-" if self.last_gen is None else f"{self.last_gen:.4g}"
        line = (
            f"iter {done}/{self.total} [{bar}] {per:.2f} s/it ETA {int(eta // 3600)}:"
            f"{int(eta % 3600 // 60):02d}:{int(eta % 60):02d} critic {entry['critic_loss']:.4g} "
            f"gen {gen} (updates: critic {entry['critic_updates']}, generator "
            f"{entry['generator_updates']})"
        )
        print(("\r" if self.tty else "") + line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)  # fmt: skip

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)
