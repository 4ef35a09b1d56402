"""Horizon-weighted DMD fine-tuning (paper Eq. 5, §3.3, App. A; research/training_dmd.md).

Roles: generator (the causal checkpoint, trainable), critic / "fake score" (base Wan2.1 1.3B,
trainable), teacher / "real score" (Wan2.1 14B in the paper, frozen). All three are
`CausalWanDiT`: without a cache it is the official bidirectional forward.

One iteration = one critic update; on every `gen_every`-th iteration (0 included) a generator
update runs first, on its own prompts (Self-Forcing's loop). Trainable weights are fp32
masters (a 2e-6 step is lost on a bf16 weight); linears compute in the model's
`compute_dtype` (bf16 on a GPU). With several processes (torchrun) each takes its share of
the batch's samples and gradients are summed across processes before the update, so a run
gives the same result on any number of GPUs (every random draw derives from (seed,
iteration, sample, purpose)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor, distribute_tensor

from ..errors import AdaStateError
from ..model import CausalWanDiT
from ..stream.engine import prepare_conditioning
from .config import (
    CRITIC_EXIT,
    CRITIC_NOISE,
    CRITIC_ROLLOUT,
    CRITIC_T,
    GEN_EXIT,
    GEN_NOISE,
    GEN_ROLLOUT,
    GEN_T,
    TrainConfig,
    derive_seed,
)
from .data import PromptData, batch_rows
from .dmd import (
    GENERATOR_SHIFT,
    SCORE_SHIFT,
    add_noise,
    dmd_gradient,
    dmd_loss,
    flow_from_x0,
    flow_matching_loss,
    horizon_weights,
    shifted_timesteps,
    x0_from_flow,
)
from .rollout import rollout, sample_noise_fn

STATE_FORMAT = "adastate-train-state-v1"


class NonFiniteLossError(AdaStateError):
    """A loss or gradient became NaN/inf; no update was applied."""


@dataclass
class World:
    """This process's place among `size` training processes (torchrun)."""

    rank: int = 0
    size: int = 1

    def samples(self, batch: int) -> list[int]:
        return [j for j in range(batch) if j % self.size == self.rank]

    def sum_(self, tensors: list[Tensor]) -> None:
        if self.size > 1:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def any_(self, flag: bool) -> bool:
        """True on every process if it is True on one (a stop must be taken together)."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


@dataclass
class StepLog:
    iteration: int
    critic_loss: float
    critic_grad_norm: float
    exit_step_critic: int
    generator_loss: float | None = None
    generator_grad_norm: float | None = None
    exit_step_generator: int | None = None
    dmd_grad_abs: float | None = None
    dmd_grad_abs_per_frame: list[float] | None = None
    extra: dict = field(default_factory=dict)


def draw(seed: int, *parts: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, *parts))


def make_trainable(model: CausalWanDiT) -> CausalWanDiT:
    """fp32 master weights (any fp8 scale already applied by the loader), gradients on."""
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dtype != torch.float32:
                setattr(module, name, torch.nn.Parameter(param.detach().float()))
        if getattr(module, "scale_weight", None) is not None:
            raise AdaStateError(
                "a trainable model must be loaded with weight_dtype fp32 (scales applied)"
            )
    model.requires_grad_(True)
    return model


class Trainer:
    """Holds the three models, both optimizers, the EMA and the step counter."""

    def __init__(
        self,
        generator: CausalWanDiT,
        critic: CausalWanDiT,
        teacher: CausalWanDiT,
        data: PromptData,
        config: TrainConfig,
        *,
        world: World | None = None,
        ema_device: torch.device | str | None = None,
        shard: bool = True,
    ):
        self.generator, self.critic, self.teacher = generator, critic, teacher
        self.data, self.config = data, config
        self.world = world or World()
        self.sharded = shard and self.world.size > 1
        self._backward_scale = float(self.world.size) if self.sharded else 1.0
        if self.sharded and config.batch % self.world.size:
            raise AdaStateError(
                f"batch {config.batch} does not split evenly over {self.world.size} sharded "
                "processes (each must run the same micro-batches); replicate instead"
            )
        for role, model in (("generator", generator), ("critic", critic)):
            bad = [n for n, p in model.named_parameters() if p.dtype != torch.float32]
            if bad:
                raise AdaStateError(
                    f"the {role}'s trainable weights must be fp32 masters ({bad[0]} is "
                    f"{model.get_parameter(bad[0]).dtype}); use train.make_trainable"
                )
            model.requires_grad_(True)
            model.gradient_checkpointing = config.checkpointing
        teacher.requires_grad_(False)
        if self.sharded:
            self._shard()
        self.gen_params = [p for p in generator.parameters()]
        self.critic_params = [p for p in critic.parameters()]
        opt = dict(betas=(config.beta1, config.beta2), weight_decay=config.weight_decay, eps=1e-8)
        self.gen_opt = torch.optim.AdamW(self.gen_params, lr=config.gen_lr, **opt)
        self.critic_opt = torch.optim.AdamW(self.critic_params, lr=config.critic_lr, **opt)
        self.weights = horizon_weights(config.frames, config.alpha)
        self.ema: dict[str, Tensor] | None = None
        self.ema_device = torch.device(ema_device) if ema_device else generator.device
        if self.sharded:
            self.ema_device = generator.device  # the EMA is sharded like the weights
        self.step = 0
        self.generator_updates = 0
        self._negative = None

    def _shard(self) -> None:
        """FSDP2: each model is one `fully_shard` unit over all processes (a 1.3B block is
        small; Self-Forcing's size-based wrap makes the 1.3B one unit too). The generator and
        critic keep their gathered weights between the many calls of a rollout; the frozen
        teacher is sharded too and gathered per call. FSDP averages gradients over processes;
        each micro-batch loss is already its share of the global batch, so the backward pass
        is scaled by the number of processes to make the average a sum (gloo has no
        pre-multiplied sum)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(self.generator.device.type, (self.world.size,))
        for model, keep in ((self.generator, True), (self.critic, True), (self.teacher, False)):
            fully_shard(model, mesh=mesh, reshard_after_forward=not keep)
            for name in ("cache_kv", "encode_context"):
                register_fsdp_forward_method(model, name)

    def _reshard(self) -> None:
        """Sharded: put the trained models back into their sharded form (no-grad calls leave
        them gathered), so their parameters are the DTensors the optimizers and EMA hold."""
        if self.sharded:
            self.generator.reshard()
            self.critic.reshard()

    # -- randomness --------------------------------------------------------------------------

    def exit_step(self, purpose: int) -> int:
        """The iteration's exit step, shared by every chunk, sample and process."""
        gen = draw(self.config.seed, self.step, purpose)
        return int(torch.randint(0, self.config.num_steps, (1,), generator=gen))

    def _timesteps(self, samples: list[int], purpose: int) -> Tensor:
        raw = [
            torch.randint(0, 1000, (1,), generator=draw(self.config.seed, self.step, j, purpose))
            for j in samples
        ]
        return shifted_timesteps(torch.cat(raw))

    def _noise(self, samples: list[int], purpose: int, like: Tensor) -> Tensor:
        shape = (1, *like.shape[1:])
        parts = [
            torch.randn(
                shape, generator=draw(self.config.seed, self.step, j, purpose), dtype=torch.float32
            )
            for j in samples
        ]
        return torch.cat(parts).to(like.device)

    def _rollout_seeds(self, samples: list[int], purpose: int) -> list[int]:
        return [derive_seed(self.config.seed, self.step, j, purpose) for j in samples]

    def _micro_batches(self) -> list[list[int]]:
        mine = self.world.samples(self.config.batch)
        m = self.config.micro_batch
        return [mine[i : i + m] for i in range(0, len(mine), m)]

    def _conditioning(self, model: CausalWanDiT, samples: list[int], phase: int) -> Tensor:
        rows = [
            self.data.rows(self.data.index(self.step, phase, j, self.config.batch)) for j in samples
        ]
        return prepare_conditioning(model, batch_rows(rows))

    # -- scores ------------------------------------------------------------------------------

    @staticmethod
    def score(model: CausalWanDiT, xt: Tensor, t: Tensor, context: Tensor) -> Tensor:
        """A bidirectional model's x0 prediction (its own shift-8 grid σ, float64)."""
        flow = model(xt, t.to(xt.device), context)
        return x0_from_flow(xt, flow.float(), t, SCORE_SHIFT)

    def _uncond(self, batch: int) -> Tensor:
        if self._negative is None:
            self._negative = prepare_conditioning(self.teacher, self.data.negative[None])
        return self._negative.expand(batch, -1, -1)

    # -- updates -----------------------------------------------------------------------------

    def generator_step(self) -> dict:
        cfg = self.config
        s = self.exit_step(GEN_EXIT)
        total = torch.zeros(3, dtype=torch.float64)  # loss, |g| mean, samples
        per_frame = torch.zeros(cfg.frames, dtype=torch.float64)
        for samples in self._micro_batches():
            cond = self._conditioning(self.generator, samples, 0)
            noise_fn = sample_noise_fn(cfg.stream, self._rollout_seeds(samples, GEN_ROLLOUT))
            video = rollout(
                self.generator, cond, cfg.stream, cfg.chunks, s, noise_fn,
                leak_content_kv=cfg.leak_content_kv,
            ).video  # fmt: skip
            with torch.no_grad():
                x = video.detach()
                t = self._timesteps(samples, GEN_T)
                xt = add_noise(x, self._noise(samples, GEN_NOISE, x), t, GENERATOR_SHIFT)
                fake = self.score(self.critic, xt, t, cond)
                real_c = self.score(self.teacher, xt, t, cond)
                real_u = self.score(self.teacher, xt, t, self._uncond(len(samples)))
                real = real_c + cfg.guidance * (real_c - real_u)
                grad = dmd_gradient(x, fake, real, per_frame=cfg.normaliser == "frame")
                del fake, real, real_c, real_u, xt
            share = len(samples) / cfg.batch
            loss = dmd_loss(video, grad, self.weights) * share
            (loss * self._backward_scale).backward()
            total += torch.tensor(
                [loss.item(), grad.abs().mean().item() * share, len(samples)], dtype=torch.float64
            )
            per_frame += grad.abs().double().mean(dim=(0, 1, 3, 4)).cpu() * share
            del video, grad, loss
        self.world.sum_([per_frame])  # the log's per-frame |grad|: every process's share
        norm = self._update(self.gen_params, self.gen_opt, total, "generator")
        self.generator_updates += 1
        self._reshard()
        if self.ema is not None:
            self._ema_update()
        return {
            "generator_loss": float(total[0]),
            "generator_grad_norm": norm,
            "dmd_grad_abs": float(total[1]),
            "dmd_grad_abs_per_frame": [round(float(v), 6) for v in per_frame],
            "exit_step_generator": s,
        }

    def critic_step(self) -> dict:
        cfg = self.config
        s = self.exit_step(CRITIC_EXIT)
        total = torch.zeros(3, dtype=torch.float64)
        for samples in self._micro_batches():
            cond = self._conditioning(self.generator, samples, 1)
            noise_fn = sample_noise_fn(cfg.stream, self._rollout_seeds(samples, CRITIC_ROLLOUT))
            with torch.no_grad():
                x = rollout(self.generator, cond, cfg.stream, cfg.chunks, s, noise_fn).video
                t = self._timesteps(samples, CRITIC_T)
                noise = self._noise(samples, CRITIC_NOISE, x)
                xt = add_noise(x, noise, t, GENERATOR_SHIFT)
            x0 = self.score(self.critic, xt, t, cond)
            flow = flow_from_x0(xt, x0, t, GENERATOR_SHIFT)
            share = len(samples) / cfg.batch
            loss = flow_matching_loss(flow, noise, x) * share
            (loss * self._backward_scale).backward()
            total += torch.tensor([loss.item(), 0.0, len(samples)], dtype=torch.float64)
            del x, xt, x0, flow, loss
        norm = self._update(self.critic_params, self.critic_opt, total, "critic")
        return {"critic_loss": float(total[0]), "critic_grad_norm": norm, "exit_step_critic": s}

    def _update(self, params, opt, total: Tensor, role: str) -> float:
        grads = [] if self.sharded else [p.grad for p in params if p.grad is not None]
        self.world.sum_(grads + [total])  # FSDP has already summed the gradients
        norm = _full(torch.nn.utils.clip_grad_norm_(params, self.config.clip))
        if not math.isfinite(float(norm)) or not math.isfinite(float(total[0])):
            opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(
                f"the {role} loss or gradient became NaN/inf at iteration {self.step}; no update "
                "was applied"
            )
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(norm)

    def iteration(self) -> dict:
        """One iteration: a generator update first when it is due, then a critic update."""
        log: dict = {"iteration": self.step}
        if self.step % self.config.gen_every == 0:
            log.update(self.generator_step())
        log.update(self.critic_step())
        self._reshard()
        self.step += 1
        if self.ema is None and self.step >= self.config.ema_start:
            self.ema = {
                n: p.detach().to(self.ema_device, torch.float32, copy=True)
                for n, p in self.generator.named_parameters()
            }
        log["critic_updates"] = self.step
        log["generator_updates"] = self.generator_updates
        return log

    @torch.no_grad()
    def _ema_update(self) -> None:
        d = self.config.ema_decay
        for n, p in self.generator.named_parameters():
            e = self.ema[n]
            e.mul_(d).add_(p.detach().to(e.device, torch.float32), alpha=1 - d)

    # -- weights and state ---------------------------------------------------------------------

    def generator_weights(self, ema: bool = True) -> dict[str, Tensor]:
        """Canonical fp32 state dict of the generator (the EMA when it exists and `ema`), on
        the CPU. Sharded: every process must call it (the weights are gathered)."""
        if ema and self.ema is not None:
            return {n: _full(t).detach().cpu().clone() for n, t in self.ema.items()}
        return _cpu_state(self.generator)

    def state_dict(self) -> dict:
        """Everything a bit-identical resume needs (randomness is a function of the step).
        The same layout for any number of processes (full tensors, optimizer states keyed by
        parameter name), so a run may resume on another number of GPUs."""
        opts = StateDictOptions(full_state_dict=True, cpu_offload=False)
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "generator_updates": self.generator_updates,
            "config": self.config.to_json(),
            "generator": self.generator_weights(ema=False),
            "critic": _cpu_state(self.critic),
            "generator_optimizer": _cpu_tree(
                get_optimizer_state_dict(self.generator, self.gen_opt, options=opts)
            ),
            "critic_optimizer": _cpu_tree(
                get_optimizer_state_dict(self.critic, self.critic_opt, options=opts)
            ),
            "ema": None if self.ema is None else self.generator_weights(ema=True),
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for model, key in ((self.generator, "generator"), (self.critic, "critic")):
                own = dict(model.named_parameters())
                for name, value in state[key].items():
                    own[name].copy_(_like(value, own[name]))
        opts = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(
            self.generator, self.gen_opt, state["generator_optimizer"], options=opts
        )
        set_optimizer_state_dict(
            self.critic, self.critic_opt, state["critic_optimizer"], options=opts
        )
        if state["ema"] is None:
            self.ema = None
        else:
            own = dict(self.generator.named_parameters())
            self.ema = {
                n: _like(t.float(), own[n], self.ema_device).clone()
                for n, t in state["ema"].items()
            }
        self.step = int(state["step"])
        self.generator_updates = int(state["generator_updates"])


def _full(t):
    """A DTensor gathered to a plain tensor (a collective), anything else as it is."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _like(full: Tensor, ref: Tensor, device=None) -> Tensor:
    """`full` placed like `ref` (sharded the same way when ref is a DTensor)."""
    if isinstance(ref, DTensor):
        return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
    return full.to(device or ref.device, ref.dtype)


def _cpu_state(model) -> dict[str, Tensor]:
    return {n: _full(t).detach().cpu().clone() for n, t in model.state_dict().items()}


def _cpu_tree(obj):
    if isinstance(obj, Tensor):
        return _full(obj).detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return obj


def run_iterations(
    trainer: Trainer,
    until: int,
    on_iteration: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    while trainer.step < until:
        log = trainer.iteration()
        if on_iteration is not None:
            on_iteration(log)
        if should_stop is not None and trainer.world.any_(should_stop()):
            break
