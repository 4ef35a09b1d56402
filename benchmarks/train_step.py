"""Cost of one DMD training iteration (adastate_core.train.Trainer): a generator update, a
critic update and a whole iteration (one critic update, a generator update every
`gen_every`-th), timed separately with random weights and random prompt embeddings.

    python benchmarks/train_step.py                  # CPU, tiny models, 21 frames @32x32 px:
                                                     # ratios only (generator / critic step)
    python benchmarks/train_step.py --gpu            # full size on one GPU: 1.3B generator +
                                                     # 1.3B critic (fp32 masters, bf16 compute)
                                                     # + 1.3B bf16 teacher, micro-batch 1,
                                                     # 21 latent frames @480x832: s/iteration,
                                                     # peak memory vs the modelled plan
    python benchmarks/train_step.py --gpu --teacher 14b   # the paper's 14B teacher (bf16)

The exit step of a rollout (drawn per iteration in training) sets how many denoising steps
run before the one with gradient, so the separate generator / critic timings are taken at
every exit step (or those given with --exit-step) and averaged: the expected cost of a step.
The whole iterations run as in training (random exit steps); their default count is
`gen_every`, so they hold exactly one generator update. CPU figures are only meaningful as
ratios. Memory in GB = 1e9 bytes (as the plan and the H200's 141 GB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adastate_core.model import CausalWanDiT, WanConfig  # noqa: E402
from adastate_core.model.config import KNOWN_SIZES  # noqa: E402
from adastate_core.model.loader import load_dit  # noqa: E402
from adastate_core.model.random_weights import TINY, random_state_dict  # noqa: E402
from adastate_core.stream import StreamConfig  # noqa: E402
from adastate_core.train import PromptData, TrainConfig, Trainer, make_trainable  # noqa: E402
from adastate_core.train.plan import GB, GPU_OVERHEAD, MemoryPlan, ModelInfo, plan_memory  # noqa: E402

H200_BUDGET = 141 * GB
WAN_1_3B = KNOWN_SIZES["Wan2.1-T2V-1.3B"]
WAN_14B = KNOWN_SIZES["Wan2.1-T2V-14B"]
SMALL = WanConfig(  # CPU "small": wider than TINY, still seconds per step
    dim=256, ffn_dim=1024, num_heads=2, num_layers=4, freq_dim=64, text_dim=64, text_len=32
)
CPU_SIZES = {"tiny": TINY, "small": SMALL}


# ----------------------------------------------------------------------------------------------
# pure helpers (no device needed)


def teacher_config(generator: WanConfig, teacher: str) -> WanConfig:
    """The teacher's architecture: "1.3b" = the generator's own; "14b" = the generator scaled
    as Wan2.1 14B is to 1.3B (heads x40/12 at the same head width, FFN x13824/8960, layers
    x40/30): the real 14B for the full-size generator, a proportional one for CPU sizes."""
    if teacher == "1.3b":
        return generator
    if teacher != "14b":
        raise ValueError(f"teacher must be '1.3b' or '14b', got {teacher!r}")
    if generator == WAN_1_3B:
        return WAN_14B
    heads = max(1, round(generator.num_heads * WAN_14B.num_heads / WAN_1_3B.num_heads))
    return WanConfig(
        dim=heads * generator.head_dim,
        ffn_dim=round(generator.ffn_dim * WAN_14B.ffn_dim / WAN_1_3B.ffn_dim),
        num_heads=heads,
        num_layers=max(1, round(generator.num_layers * WAN_14B.num_layers / WAN_1_3B.num_layers)),
        freq_dim=generator.freq_dim,
        text_dim=generator.text_dim,
        text_len=generator.text_len,
    )


def train_config(
    height: int, width: int, chunks: int = 7, batch: int = 1, micro_batch: int = 1,
    gen_every: int = 5, seed: int = 0,
) -> TrainConfig:  # fmt: skip
    """The benchmark's settings: the paper's stream and recipe, the EMA on from the start (its
    update is part of a generator step and its memory part of the plan)."""
    return TrainConfig(
        iterations=10**6,
        batch=batch,
        micro_batch=micro_batch,
        gen_every=gen_every,
        chunks=chunks,
        seed=seed,
        ema_start=0,
        stream=StreamConfig(height=height, width=width),
    )


def full_size_plan(
    teacher: str = "14b", height: int = 480, width: int = 832, chunks: int = 7,
    batch: int = 1, micro_batch: int = 1,
) -> MemoryPlan:  # fmt: skip
    """The modelled memory plan (`adastate train --dry-run`'s) of full-size training on one GPU:
    1.3B generator + 1.3B critic as fp32 masters with AdamW, the teacher held in bf16, bf16
    compute, the fp32 EMA on the device."""
    tc = train_config(height, width, chunks, batch, micro_batch)
    trainable = ModelInfo(WAN_1_3B, WAN_1_3B.num_params(), 16.0)
    t = teacher_config(WAN_1_3B, teacher)
    return plan_memory(tc, trainable, trainable, ModelInfo(t, t.num_params(), 2.0), gpu=True)


# ----------------------------------------------------------------------------------------------
# building


def build_model(
    config: WanConfig, seed: int, device: torch.device, compute: torch.dtype, trainable: bool
) -> CausalWanDiT:
    """A random-weight DiT through the real loader. The state dict is made in the dtype the
    loader stores the big linear weights in (fp32 masters / the compute dtype), so the loader
    keeps those very tensors: the peak is the model plus a few small converted ones."""
    storage = torch.float32 if trainable else compute
    state = random_state_dict(config, seed, storage, device, draw_on_device=True)
    model = load_dit(
        state,
        dtype=compute,
        weight_dtype=storage,
        device=device,
        num_heads=config.num_heads,
        text_len=config.text_len,
        eps=config.eps,
    )
    del state
    return make_trainable(model) if trainable else model


def random_data(text_dim: int, tokens: int, prompts: int = 4, seed: int = 0) -> PromptData:
    g = torch.Generator().manual_seed(seed)
    rows = {i: torch.randn(tokens, text_dim, generator=g) for i in range(prompts)}
    names = [f"random prompt {i}" for i in range(prompts)]
    return PromptData(names, rows, torch.randn(tokens, text_dim, generator=g), seed)


def build_trainer(
    generator_cfg: WanConfig, teacher: str, tc: TrainConfig, device: torch.device,
    compute: torch.dtype, text_tokens: int,
) -> Trainer:  # fmt: skip
    """Teacher first (the largest), then critic and generator; all on `device`."""
    teacher_model = build_model(
        teacher_config(generator_cfg, teacher), 2, device, compute, trainable=False
    )
    critic = build_model(generator_cfg, 1, device, compute, trainable=True)
    generator = build_model(generator_cfg, 0, device, compute, trainable=True)
    data = random_data(generator_cfg.text_dim, min(text_tokens, generator_cfg.text_len))
    return Trainer(generator, critic, teacher_model, data, tc)


# ----------------------------------------------------------------------------------------------
# timing


@contextmanager
def fixed_exit_step(trainer: Trainer, step: int):
    """Every rollout of `trainer` exits at `step` (instead of the per-iteration draw)."""
    trainer.exit_step = lambda purpose: step
    try:
        yield
    finally:
        del trainer.exit_step


def _time(fn, sync) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure(
    trainer: Trainer, repeats: int, exit_steps: list[int] | None, iterations: int | None, sync
) -> dict:
    """Warm-up iteration, then `repeats` generator and critic steps at each exit step (mean
    over exit steps = the expected step), then `iterations` whole iterations."""
    cfg = trainer.config
    exit_steps = list(range(cfg.num_steps)) if exit_steps is None else list(exit_steps)
    iterations = cfg.gen_every if iterations is None else iterations
    if repeats < 1 or iterations < 1:
        raise ValueError(f"repeats and iterations must be >= 1, got {repeats}, {iterations}")
    if not exit_steps or any(not 0 <= s < cfg.num_steps for s in exit_steps):
        raise ValueError(f"exit steps must be in 0..{cfg.num_steps - 1}, got {exit_steps}")
    warm = _time(trainer.iteration, sync)
    gen_by, critic_by = {}, {}
    for s in exit_steps:
        with fixed_exit_step(trainer, s):
            gen_by[s] = statistics.median(
                _time(trainer.generator_step, sync) for _ in range(repeats)
            )
            critic_by[s] = statistics.median(
                _time(trainer.critic_step, sync) for _ in range(repeats)
            )
    logs = []
    sync()
    start = time.perf_counter()
    for _ in range(iterations):
        logs.append(trainer.iteration())
    sync()
    whole = time.perf_counter() - start
    gen = statistics.fmean(gen_by.values())
    critic = statistics.fmean(critic_by.values())
    return {
        "warmup_iteration_s": warm,
        "exit_steps": exit_steps,
        "repeats": repeats,
        "generator_step_s": gen,
        "critic_step_s": critic,
        "generator_critic_ratio": gen / critic,
        "generator_step_s_by_exit": gen_by,
        "critic_step_s_by_exit": critic_by,
        "iterations_timed": iterations,
        "generator_updates_timed": sum("generator_loss" in log for log in logs),
        "iteration_s": whole / iterations,
        "amortised_iteration_s": critic + gen / cfg.gen_every,
    }


def _describe(cfg: WanConfig) -> str:
    name = cfg.size_name()
    if not name.startswith("custom"):
        return name
    return f"dim {cfg.dim}, ffn {cfg.ffn_dim}, {cfg.num_heads} heads, {cfg.num_layers} layers"


def _report(result: dict, say) -> None:
    say(
        f"{'exit step':>9s} {'generator s':>12s} {'critic s':>10s}   (median of "
        f"{result['repeats']}, warm-up iteration {result['warmup_iteration_s']:.2f} s)"
    )
    for s in result["exit_steps"]:
        gen, critic = result["generator_step_s_by_exit"][s], result["critic_step_s_by_exit"][s]
        say(f"{s:9d} {gen:12.3f} {critic:10.3f}")
    say(
        f"{'mean':>9s} {result['generator_step_s']:12.3f} {result['critic_step_s']:10.3f}   "
        f"generator / critic = {result['generator_critic_ratio']:.2f}"
    )
    say(
        f"whole iterations: {result['iteration_s']:.3f} s/iteration over "
        f"{result['iterations_timed']} iterations ({result['generator_updates_timed']} generator "
        f"update(s)); critic + generator / {result['gen_every']} = "
        f"{result['amortised_iteration_s']:.3f} s/iteration"
    )


def _settings(generator_cfg: WanConfig, teacher_cfg: WanConfig, tc: TrainConfig) -> dict:
    return {
        "generator": _describe(generator_cfg),
        "teacher": _describe(teacher_cfg),
        "height": tc.stream.height,
        "width": tc.stream.width,
        "chunks": tc.chunks,
        "frames": tc.frames,
        "batch": tc.batch,
        "micro_batch": tc.micro_batch,
        "gen_every": tc.gen_every,
    }


# ----------------------------------------------------------------------------------------------
# the two runs


def cpu_run(
    size: str = "tiny", teacher: str = "1.3b", height: int = 32, width: int = 32,
    chunks: int = 7, batch: int = 1, micro_batch: int = 1, repeats: int = 3,
    exit_steps: list[int] | None = None, iterations: int | None = None,
    threads: int | None = 1, say=print,
) -> dict:  # fmt: skip
    """Tiny random models in fp32 on the CPU: step times, meaningful only as ratios. One
    thread by default: tiny operations gain nothing from more, and on a loaded machine
    (anything else running) several threads make the timings erratic by tens of times."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        torch.manual_seed(0)
        cfg = CPU_SIZES[size]
        tc = train_config(height, width, chunks, batch, micro_batch)
        cpu = torch.device("cpu")
        trainer = build_trainer(cfg, teacher, tc, cpu, torch.float32, text_tokens=7)
        result = {"device": "cpu", "threads": torch.get_num_threads()}
        result.update(_settings(cfg, trainer.teacher.config, tc))
        say(
            f"CPU fp32, {result['threads']} thread(s): generator and critic "
            f"{result['generator']}, teacher {result['teacher']}; {tc.frames} latent frames "
            f"({chunks} chunks) @{height}x{width} px, batch {batch} (micro-batch {micro_batch})"
        )
        result.update(measure(trainer, repeats, exit_steps, iterations, lambda: None))
    finally:
        torch.set_num_threads(previous)
    _report(result, say)
    say("CPU figures are only meaningful as ratios (generator / critic step, step / iteration)")
    return result


def gpu_run(
    teacher: str = "1.3b", height: int = 480, width: int = 832, chunks: int = 7,
    batch: int = 1, micro_batch: int = 1, repeats: int = 1,
    exit_steps: list[int] | None = None, iterations: int | None = None,
    text_tokens: int = 128, memory_check: bool = True, say=print,
) -> dict:  # fmt: skip
    """Full size on one CUDA device: 1.3B generator + critic (fp32 masters, bf16 compute),
    bf16 teacher, random weights made on the device; times, peak memory vs the plan."""
    device = torch.device("cuda", torch.cuda.current_device())
    props = torch.cuda.get_device_properties(device)
    tc = train_config(height, width, chunks, batch, micro_batch)
    plan = full_size_plan(teacher, height, width, chunks, batch, micro_batch)
    t_cfg = teacher_config(WAN_1_3B, teacher)
    result = {"device": props.name, "device_memory_gb": props.total_memory / GB}
    result.update(_settings(WAN_1_3B, t_cfg, tc))
    result["plan_rows_gb"] = {name: b / GB for name, b in plan.rows}
    result["plan_peak_gb"] = plan.peak / GB
    result["budget_gb"] = H200_BUDGET / GB
    result["plan_fits_budget"] = plan.peak <= H200_BUDGET
    say(
        f"{props.name} ({props.total_memory / GB:.1f} GB): generator and critic "
        f"{result['generator']} (fp32 masters + AdamW, bf16 compute), teacher {result['teacher']}"
        f" (bf16, frozen); {tc.frames} latent frames ({chunks} chunks) @{height}x{width}, batch "
        f"{batch} (micro-batch {micro_batch}), random weights"
    )
    say("modelled memory plan (adastate train --dry-run):")
    for line in plan.lines():
        say(line)
    if memory_check and plan.peak > props.total_memory:
        say(
            f"the modelled peak {plan.peak / GB:.1f} GB exceeds this device's "
            f"{props.total_memory / GB:.1f} GB: not run (--no-memory-check to try anyway)"
        )
        result["skipped"] = "modelled peak exceeds the device memory"
        return result
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        trainer = build_trainer(WAN_1_3B, teacher, tc, device, torch.bfloat16, text_tokens)
        torch.cuda.synchronize(device)
        result["build_s"] = time.perf_counter() - start
        result["weights_gb"] = torch.cuda.memory_allocated(device) / GB
        result.update(measure(trainer, repeats, exit_steps, iterations, torch.cuda.synchronize))
    except torch.cuda.OutOfMemoryError as err:
        result["error"] = f"out of memory: {str(err).splitlines()[0]}"
    result["peak_allocated_gb"] = torch.cuda.max_memory_allocated(device) / GB
    result["peak_reserved_gb"] = torch.cuda.max_memory_reserved(device) / GB
    result["measured_fits_budget"] = result["peak_reserved_gb"] <= H200_BUDGET
    if "error" in result:
        say(f"FAILED: {result['error']} (peak allocated {result['peak_allocated_gb']:.1f} GB)")
    else:
        say(
            f"weights built on the device in {result['build_s']:.1f} s ({result['weights_gb']:.1f} GB)"
        )
        _report(result, say)
        if batch == 1:
            say("the recipe's batch 4 on one GPU: ~4x these step times (micro-batches in turn)")
    say(
        f"peak memory: measured {result['peak_allocated_gb']:.1f} GB allocated, "
        f"{result['peak_reserved_gb']:.1f} GB reserved; modelled {result['plan_peak_gb']:.1f} GB "
        f"= {(plan.peak - GPU_OVERHEAD) / GB:.1f} GB of tensors (compare: allocated) + a "
        f"{GPU_OVERHEAD / GB:.0f} GB context/fragmentation allowance (compare: reserved)"
    )
    verdict = lambda ok: "holds" if ok else "does NOT hold"  # noqa: E731
    say(
        f"one-H200 budget {H200_BUDGET / GB:.0f} GB: modelled {verdict(result['plan_fits_budget'])}"
        f", measured {verdict(result['measured_fits_budget'])} (reserved peak; the CUDA context "
        "adds ~0.5-1 GB outside PyTorch's count)"
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpu", action="store_true", help="full size on CUDA (bf16 compute)")
    p.add_argument("--teacher", choices=["1.3b", "14b"], default="1.3b",
                   help="teacher size (CPU: '14b' is a proportionally wider tiny model)")  # fmt: skip
    p.add_argument("--size", choices=sorted(CPU_SIZES), default="tiny", help="CPU model size")
    p.add_argument("--height", type=int, default=None, help="pixels (CPU 32, GPU 480)")
    p.add_argument("--width", type=int, default=None, help="pixels (CPU 32, GPU 832)")
    p.add_argument("--chunks", type=int, default=7, help="rollout chunks (7 x 3 = 21 frames)")
    p.add_argument("--batch", type=int, default=1, help="samples per update (recipe: 4)")
    p.add_argument("--micro-batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="per exit step (CPU 3, GPU 1)")
    p.add_argument("--exit-step", type=int, action="append", default=None,
                   help="time steps at this exit step only (repeatable; default: all)")  # fmt: skip
    p.add_argument("--iterations", type=int, default=None, help="whole iterations (gen_every)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1)")
    p.add_argument("--text-tokens", type=int, default=128, help="GPU prompt rows")
    p.add_argument("--no-memory-check", action="store_true", help="GPU: run even if the plan "
                   "exceeds the device memory")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    args = p.parse_args()
    steps = len(StreamConfig().steps)
    if args.exit_step and any(not 0 <= s < steps for s in args.exit_step):
        p.error(f"--exit-step must be in 0..{steps - 1}")
    if (args.repeats is not None and args.repeats < 1) or (
        args.iterations is not None and args.iterations < 1
    ):
        p.error("--repeats and --iterations must be >= 1")
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    common = dict(
        teacher=args.teacher, chunks=args.chunks, batch=args.batch,
        micro_batch=args.micro_batch, exit_steps=args.exit_step, iterations=args.iterations,
        say=say,
    )  # fmt: skip
    if args.gpu:
        if not torch.cuda.is_available():
            p.error("--gpu needs a CUDA device")
        result = gpu_run(
            height=args.height or 480, width=args.width or 832, repeats=args.repeats or 1,
            text_tokens=args.text_tokens, memory_check=not args.no_memory_check, **common,
        )  # fmt: skip
    else:
        result = cpu_run(
            size=args.size, height=args.height or 32, width=args.width or 32,
            repeats=args.repeats or 3, threads=args.threads, **common,
        )  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
