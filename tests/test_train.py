"""The DMD trainer (issue 10; research/training_dmd.md §5.2): each property as an assertion on
tiny models on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adastate_core.model import load_dit
from adastate_core.model.random_weights import TINY, random_model
from adastate_core.stream import StreamConfig, init_stream, stream_chunks
from adastate_core.train import files
from adastate_core.train.config import TrainConfig, TrainConfigError
from adastate_core.train.data import PromptData, position_index, used_indices
from adastate_core.train.dmd import dmd_gradient, dmd_loss, grid_sigma, horizon_weights
from adastate_core.train.rollout import rollout, sample_noise_fn
from adastate_core.train.trainer import Trainer, make_trainable

SMALL = StreamConfig(height=32, width=32)


def make_data(n: int = 4, seed: int = 0) -> PromptData:
    g = torch.Generator().manual_seed(123)
    emb = {i: torch.randn(3 + i % 3, TINY.text_dim, generator=g) for i in range(n)}
    return PromptData([f"prompt {i}" for i in range(n)], emb, torch.randn(4, 32, generator=g), seed)


def make_trainer(config: TrainConfig, teacher=None, data=None) -> Trainer:
    gen = make_trainable(random_model(TINY, seed=0))
    critic = make_trainable(random_model(TINY, seed=1))
    teacher = teacher if teacher is not None else random_model(TINY, seed=2)
    return Trainer(gen, critic, teacher, data or make_data(seed=config.seed), config)


def config(**kw) -> TrainConfig:
    base = dict(iterations=4, batch=2, gen_every=2, chunks=3, ema_start=2, stream=SMALL)
    base.update(kw)
    return TrainConfig(**base)


class GaussianTeacher(nn.Module):
    """The exact x0 predictor of data x0 ~ N(mu, s^2 I) under Self-Forcing's noising (σ from the
    generator's shift-5 grid), returned as a velocity for the score's shift-8 conversion, so
    the trainer's score equals E[x0 | x_t] exactly. It ignores the prompt (uncond = cond)."""

    def __init__(self, like, mu: float, s: float):
        super().__init__()
        self.config, self.mu, self.s = like.config, mu, s
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)
        self.calls: list = []

    @property
    def device(self):
        return self.anchor.device

    def forward(self, xt, t, context):
        self.calls.append((tuple(xt.shape), torch.is_grad_enabled()))
        sig = grid_sigma(t, 5.0).reshape(-1, 1, 1, 1, 1).double()
        a, s2 = 1 - sig, self.s**2
        x0 = self.mu + a * s2 / (a * a * s2 + sig * sig) * (xt.double() - a * self.mu)
        sig8 = grid_sigma(t, 8.0).reshape(-1, 1, 1, 1, 1).double()
        return ((xt.double() - x0) / sig8).float()


# ----------------------------------------------------------------------------------------------
# 1. the DMD gradient identity and the horizon weight


def test_horizon_weights_are_a_linear_ramp_of_mean_one():
    for alpha in (0.0, 2.0, 4.0):
        w = horizon_weights(21, alpha)
        assert w.shape == (21,) and abs(float(w.mean()) - 1) < 1e-12
        assert math.isclose(float(w[-1] / w[0]), 1 + alpha, rel_tol=1e-12)
        steps = w[1:] - w[:-1]
        assert torch.allclose(steps, steps[0].expand_as(steps), rtol=0, atol=1e-12)
    assert torch.equal(horizon_weights(21, 0.0), torch.ones(21, dtype=torch.float64))


@pytest.mark.parametrize("alpha", [0.0, 2.0, 4.0])
def test_dmd_loss_gradient_is_weighted_g_over_numel(alpha):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 21, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(2, 16, 21, 4, 4, generator=g, dtype=torch.float64)
    w = horizon_weights(21, alpha)
    (dx,) = torch.autograd.grad(dmd_loss(x, grad, w), x)
    want = w.reshape(1, 1, -1, 1, 1) * grad / x.numel()
    assert torch.allclose(dx, want, rtol=1e-12, atol=1e-18)


def test_alpha_zero_is_self_forcings_loss_bit_for_bit():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 21, 4, 4, generator=g)
    grad = torch.randn(2, 16, 21, 4, 4, generator=g)
    self_forcing = 0.5 * F.mse_loss(x.double(), (x.double() - grad.double()).detach())
    assert torch.equal(dmd_loss(x, grad, horizon_weights(21, 0.0)), self_forcing)
    assert torch.equal(dmd_loss(x, grad, None), self_forcing)


def test_dmd_gradient_normaliser_per_sample_or_per_frame():
    g = torch.Generator().manual_seed(2)
    x, fake, real = (torch.randn(2, 16, 3, 4, 4, generator=g) for _ in range(3))
    got = dmd_gradient(x, fake, real)
    norm = (x - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    assert torch.allclose(got, (fake - real) / norm)
    got = dmd_gradient(x, fake, real, per_frame=True)
    norm = (x - real).abs().mean(dim=(1, 3, 4), keepdim=True)
    assert torch.allclose(got, (fake - real) / norm)


# ----------------------------------------------------------------------------------------------
# 2. the rollout is the inference engine


@pytest.mark.parametrize("policy", ["adaptive", "static", "ema", "none", "adaptive+sink"])
def test_rollout_without_grad_equals_stream_chunks_bit_for_bit(policy):
    model = random_model(TINY, seed=0)
    cfg = StreamConfig(height=32, width=32, policy=policy, seed=11, anchor_frames=2)
    stream = init_stream(model, torch.randn(1, 5, 32), cfg)
    want = [step.chunk for step in stream_chunks(model, stream, chunks=5)]
    with torch.no_grad():
        got = rollout(model, stream.conditioning, cfg, 5, 3, sample_noise_fn(cfg, [11]))
    for chunk, content, state in zip(want, got.chunk_outputs, got.states):
        assert torch.equal(chunk.content, content)
        assert (chunk.state is None and state is None) or torch.equal(chunk.state, state)


def test_exactly_one_grad_call_per_chunk_at_the_shared_exit_step():
    trainer = make_trainer(config(iterations=12, batch=1, chunks=2))
    calls = []
    gen = trainer.generator
    real_run = gen._run

    def spy(*args, want_output, **kw):
        calls.append((want_output, torch.is_grad_enabled()))
        return real_run(*args, want_output=want_output, **kw)

    gen._run = spy
    exits = set()
    for _ in range(12):
        calls.clear()
        s = trainer.exit_step(1)  # GEN_EXIT: what generator_step is about to draw
        exits.add(s)
        trainer.generator_step()
        denoise = [g for out, g in calls if out]
        cache = [g for out, g in calls if not out]
        chunks = trainer.config.chunks
        assert len(denoise) == chunks * (s + 1) and len(cache) == chunks
        assert not any(cache)
        per_chunk = [denoise[k * (s + 1) : (k + 1) * (s + 1)] for k in range(chunks)]
        assert all(c == [False] * s + [True] for c in per_chunk)
        trainer.step += 1
        if exits == {0, 1, 2, 3}:
            break
    assert exits == {0, 1, 2, 3}


def test_teacher_and_critic_score_only_the_content_frames_without_grad():
    teacher = GaussianTeacher(random_model(TINY), 0.0, 1.0)
    cfg = config(chunks=4)
    trainer = make_trainer(cfg, teacher=teacher)
    critic_calls = []
    real = trainer.critic.forward
    trainer.critic.forward = lambda x, t, c, **kw: (
        critic_calls.append((tuple(x.shape), torch.is_grad_enabled())) or real(x, t, c, **kw)
    )
    trainer.generator_step()
    frames = cfg.chunks * cfg.stream.chunk  # 12 content frames; the rollout also had states
    assert teacher.calls == [((1, 16, frames, 4, 4), False)] * 4  # cond + uncond, 2 samples
    assert critic_calls == [((1, 16, frames, 4, 4), False)] * 2
    critic_calls.clear()
    trainer.critic_step()
    assert critic_calls == [((1, 16, frames, 4, 4), True)] * 2


# ----------------------------------------------------------------------------------------------
# 3. detached chunk boundaries


def _grad_rollout(leak: bool, exit_step: int = 1, noise_fn=None):
    model = make_trainable(random_model(TINY, seed=0))
    cfg = SMALL
    cond = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(3))
    fn = noise_fn or sample_noise_fn(cfg, [5])
    return model, rollout(model, cond, cfg, 4, exit_step, fn, leak_content_kv=leak)


def test_nothing_cached_carries_a_graph_into_the_next_chunk():
    _, r = _grad_rollout(leak=False)
    for k in range(1, 4):
        stream = r.streams[k]
        cached = [t for part in (stream.window, stream.anchor) if part for t in part.tensors()]
        assert cached and not any(t.requires_grad for t in cached)
        loss = r.chunk_outputs[k].sum()
        earlier = [r.chunk_outputs[k - 1]] + (
            [r.states[k - 1]] if r.states[k - 1] is not None else []
        )
        assert all(t.requires_grad for t in earlier)
        grads = torch.autograd.grad(loss, earlier, allow_unused=True, retain_graph=True)
        assert all(g is None for g in grads)


def test_negative_control_self_forcing_leak_carries_gradient_across_chunks():
    _, r = _grad_rollout(leak=True)
    assert r.streams[2].window.k.requires_grad
    loss = r.chunk_outputs[2].sum()
    (g,) = torch.autograd.grad(loss, [r.exit_kv[1].k], allow_unused=True)
    assert g is not None and g.abs().sum() > 0
    # the leak changes gradients, never values
    _, clean = _grad_rollout(leak=False)
    assert torch.equal(r.video, clean.video)


def test_positive_control_content_loss_reaches_the_live_state():
    from adastate_core.stream.engine import noise_for

    cfg = SMALL
    leaves = {}

    def noise_fn(k, n_state):
        noise = noise_for(cfg, 100 + k, 1, n_state)
        if noise.state is not None:
            noise.state.requires_grad_(True)
            leaves[k] = noise.state
        return noise

    _, r = _grad_rollout(leak=False, exit_step=0, noise_fn=noise_fn)
    steady = [k for k in range(4) if cfg.steady(k)]
    assert steady and set(leaves) == set(steady)
    for k in steady:
        (g,) = torch.autograd.grad(r.chunk_outputs[k].sum(), [leaves[k]], retain_graph=True)
        assert g.abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# 4. updates, EMA, precision


def test_update_alternation_counts_and_no_stray_gradients():
    cfg = config(iterations=11, gen_every=5, ema_start=100)
    trainer = make_trainer(cfg)
    teacher_before = {k: v.clone() for k, v in trainer.teacher.state_dict().items()}
    for _ in range(11):
        log = trainer.iteration()
        assert all(p.grad is None for p in trainer.gen_params + trainer.critic_params)
    assert log["critic_updates"] == 11 and log["generator_updates"] == 3
    p_gen, p_critic = trainer.gen_params[0], trainer.critic_params[0]
    assert trainer.gen_opt.state[p_gen]["step"] == math.ceil(11 / 5)
    assert trainer.critic_opt.state[p_critic]["step"] == 11
    for k, v in trainer.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k])


def test_ema_starts_at_its_step_and_follows_the_float64_recursion():
    cfg = config(iterations=7, gen_every=1, ema_start=3, ema_decay=0.9, gen_lr=1e-3)
    trainer = make_trainer(cfg)
    ref = None
    for _ in range(7):
        trainer.iteration()
        weights = {n: p.detach().double().clone() for n, p in trainer.generator.named_parameters()}
        if ref is not None:  # updated after every generator update once it exists
            ref = {n: 0.9 * ref[n] + 0.1 * weights[n] for n in ref}
        if trainer.step < 3:
            assert trainer.ema is None
        elif ref is None:  # created when the step reaches ema_start, from the weights then
            ref = weights
            assert all(torch.equal(trainer.ema[n].double(), weights[n]) for n in ref)
    assert all(trainer.ema[n].dtype == torch.float32 for n in ref)
    worst = max((trainer.ema[n].double() - ref[n]).abs().max().item() for n in ref)
    assert worst < 1e-6
    moved = max((trainer.ema[n].double() - weights[n]).abs().max().item() for n in ref)
    assert moved > 1e-5  # the EMA is not just a copy of the weights


def test_master_weights_stay_fp32_and_a_2e_6_step_moves_them():
    cfg = config(iterations=1, gen_every=1)
    trainer = make_trainer(cfg)
    before = [p.detach().clone() for p in trainer.gen_params]
    trainer.iteration()
    assert all(p.dtype == torch.float32 for p in trainer.gen_params + trainer.critic_params)
    changed = sum(int(not torch.equal(a, p)) for a, p in zip(before, trainer.gen_params))
    assert changed > len(before) // 2
    w = torch.full((4,), 0.02, dtype=torch.bfloat16)  # why: the same step is lost in bf16
    assert torch.equal(w - 2e-6, w)


def test_learning_moves_samples_toward_an_analytic_gaussian_target():
    mu = 1.5
    teacher = GaussianTeacher(random_model(TINY), mu, 0.5)
    cfg = config(iterations=10, gen_every=1, gen_lr=3e-3, critic_lr=3e-3, chunks=2, ema_start=99)
    trainer = make_trainer(cfg, teacher=teacher)

    def distance():
        with torch.no_grad():
            fn = sample_noise_fn(cfg.stream, [1, 2, 3, 4])
            video = rollout(trainer.generator, torch.randn(4, 5, 32), cfg.stream, 2, 3, fn).video
        assert torch.isfinite(video).all()
        return abs(video.mean().item() - mu)

    start = distance()
    for _ in range(10):
        log = trainer.iteration()
        assert math.isfinite(log["critic_loss"]) and math.isfinite(log["generator_loss"])
    assert distance() < start / 2


def test_critic_only_steps_lower_the_critic_loss():
    from adastate_core.train.dmd import add_noise, flow_from_x0, flow_matching_loss

    cfg = config(iterations=30, gen_every=10**6, critic_lr=3e-3)
    trainer = make_trainer(cfg)
    trainer.step = 1  # no generator update at iteration 0 either
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 16, 9, 4, 4, generator=g) * 0.5
    t = torch.tensor([300.0, 700.0])
    noise = torch.randn(x.shape, generator=g)
    cond = torch.randn(2, 4, 32, generator=g)

    def fixed_loss():
        with torch.no_grad():
            xt = add_noise(x, noise, t)
            return flow_matching_loss(
                flow_from_x0(xt, Trainer.score(trainer.critic, xt, t, cond), t), noise, x
            ).item()

    before = fixed_loss()
    gen_before = [p.detach().clone() for p in trainer.gen_params]
    for _ in range(15):
        trainer.critic_step()
        trainer.step += 1
    assert fixed_loss() < before
    assert all(torch.equal(a, p) for a, p in zip(gen_before, trainer.gen_params))


# ----------------------------------------------------------------------------------------------
# 5. checkpoints, resume, determinism


def test_checkpoints_round_trip_through_load_dit(tmp_path):
    cfg = config(iterations=3, ema_start=2)
    trainer = make_trainer(cfg)
    for _ in range(3):
        trainer.iteration()
    assert trainer.ema is not None
    hints = files.hints(trainer.generator)
    pt, st = files.write_checkpoints(
        tmp_path,
        trainer.generator_weights(ema=False),
        trainer.generator_weights(ema=True),
        hints,
        save_dtype=torch.float32,
    )
    raw = torch.load(pt, weights_only=True)
    assert set(raw) == {"generator", "generator_ema", "config"}
    assert not any("_fsdp_wrapped_module" in k for k in raw["generator"])
    x = torch.randn(1, 16, 3, 4, 4)
    cond = torch.randn(1, 5, 32)
    ema_model = load_dit(trainer.generator_weights(ema=True), dtype=torch.float32, **hints)
    want = ema_model(x, 500.0, cond)
    for path in (pt, st):  # both files hold the EMA generator for inference
        got = load_dit(path, dtype=torch.float32)(x, 500.0, cond)
        assert torch.equal(got, want)
    trainer.generator.eval()
    with torch.no_grad():
        live = trainer.generator(x, 500.0, cond)
    raw_gen = load_dit(raw["generator"], dtype=torch.float32, **hints)(x, 500.0, cond)
    assert torch.equal(raw_gen, live)


def test_resume_is_bit_identical(tmp_path):
    cfg = config(iterations=6, gen_every=2, ema_start=2)
    straight = make_trainer(cfg)
    for _ in range(6):
        straight.iteration()
    first = make_trainer(cfg)
    for _ in range(3):
        first.iteration()
    files.save_train_state(tmp_path, first.state_dict())
    second = make_trainer(cfg)  # fresh models: everything comes from the state file
    second.load_state_dict(files.load_train_state(tmp_path / files.TRAIN_STATE))
    for _ in range(3):
        second.iteration()
    for a, b in ((straight.generator, second.generator), (straight.critic, second.critic)):
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), n
    for n in straight.ema:
        assert torch.equal(straight.ema[n], second.ema[n])
    for opt_a, opt_b in (
        (straight.gen_opt, second.gen_opt),
        (straight.critic_opt, second.critic_opt),
    ):
        sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
        for k in sa:
            for key in sa[k]:
                assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key]))


def test_same_seed_same_losses_other_seed_other_losses():
    def losses(seed):
        trainer = make_trainer(config(iterations=3, seed=seed))
        return [trainer.iteration() for _ in range(3)]

    a, b, c = losses(0), losses(0), losses(1)
    keys = ("critic_loss", "generator_loss", "exit_step_critic")
    assert [[e.get(k) for k in keys] for e in a] == [[e.get(k) for k in keys] for e in b]
    assert [e["critic_loss"] for e in a] != [e["critic_loss"] for e in c]


def test_prompt_order_is_independent_of_processes_and_covers_every_prompt():
    cfg = config(iterations=50, batch=4, gen_every=5)
    seq = [position_index(0, 7, p) for p in range(14)]
    assert sorted(seq[:7]) == list(range(7)) and sorted(seq[7:]) == list(range(7))
    assert sorted(used_indices(cfg, 7)) == list(range(7))
    short = config(iterations=1, batch=2, gen_every=5)
    assert len(used_indices(short, 100)) == 4  # generator batch + critic batch of iteration 0


def test_settings_are_checked():
    with pytest.raises(TrainConfigError, match="micro_batch"):
        config(micro_batch=3)
    with pytest.raises(TrainConfigError, match="gen_every"):
        config(gen_every=0)
    with pytest.raises(TrainConfigError, match="normaliser"):
        config(normaliser="global")
    with pytest.raises(TrainConfigError, match="alpha"):
        config(alpha=float("nan"))
