"""benchmarks/train_step.py runs (tiny size, no timing assertions) and its full-size memory plan
and device-side weight building stay right without a GPU."""

from __future__ import annotations

import json
import sys

import torch

from adastate_core.model.random_weights import TINY, random_state_dict

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import train_step  # noqa: E402


def test_cpu_run_through_main_json(monkeypatch, capsys):
    argv = ["train_step.py", "--chunks", "1", "--repeats", "1", "--exit-step", "0",
            "--exit-step", "3", "--iterations", "2", "--json"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    train_step.main()
    out = json.loads(capsys.readouterr().out)
    for key in ("warmup_iteration_s", "generator_step_s", "critic_step_s", "iteration_s",
                "amortised_iteration_s", "generator_critic_ratio"):  # fmt: skip
        assert out[key] > 0, key
    assert out["device"] == "cpu" and out["frames"] == 3 and out["batch"] == 1
    assert out["exit_steps"] == [0, 3] and out["iterations_timed"] == 2
    assert set(out["generator_step_s_by_exit"]) == set(out["critic_step_s_by_exit"]) == {"0", "3"}
    # after the warm-up (iteration 0), iterations 1 and 2 hold no generator update (gen_every 5)
    assert out["generator_updates_timed"] == 0


def test_full_size_plan_fits_one_h200_with_the_14b_teacher():
    plan = train_step.full_size_plan("14b", height=480, width=832, chunks=7, micro_batch=1)
    assert 80e9 < plan.peak < 141e9  # research: ~100 GB
    rows = dict(plan.rows)
    assert 28e9 < rows["teacher (frozen)"] < 29e9  # 14.3B parameters in bf16
    small = train_step.full_size_plan("1.3b")
    assert small.peak < plan.peak - 25e9


def test_teacher_configs():
    wan13, wan14 = train_step.WAN_1_3B, train_step.WAN_14B
    assert train_step.teacher_config(wan13, "14b") == wan14
    assert train_step.teacher_config(wan13, "1.3b") == wan13
    assert wan14.dim == 5120 and wan14.num_layers == 40 and wan14.num_heads == 40
    tiny14 = train_step.teacher_config(TINY, "14b")  # a proportionally larger CPU teacher
    assert tiny14.head_dim == TINY.head_dim and tiny14.text_dim == TINY.text_dim
    assert 6 < tiny14.num_params() / TINY.num_params() < 15


def test_device_side_weights_match_random_weights():
    """The GPU path's per-tensor, on-device state dict is random_state_dict's (drawn on the
    CPU here), and the loader keeps its big tensors rather than copying them."""
    ours = random_state_dict(TINY, 3, torch.float32, "cpu", draw_on_device=True)
    ref = random_state_dict(TINY, 3)
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
    model = train_step.build_model(TINY, 3, torch.device("cpu"), torch.float32, trainable=True)
    params = dict(model.named_parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in params.values())
    assert torch.equal(params["blocks.0.ffn.0.weight"], ref["blocks.0.ffn.0.weight"])
    frozen = train_step.build_model(TINY, 3, torch.device("cpu"), torch.bfloat16, trainable=False)
    assert frozen.blocks[0].ffn[0].weight.dtype == torch.bfloat16
