"""Benchmark harnesses run (tiny sizes, no timing assertions), so GPU-only paths stay working."""

from __future__ import annotations

import argparse
import sys

import torch

from adastate_core.model import WanConfig

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import dit_forward  # noqa: E402


def test_adastate_step_harness_runs_on_cpu():
    args = argparse.Namespace(attention="sdpa", height=64, width=96, warmup=1, repeats=2)
    cfg = WanConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_len=32)
    out = dit_forward.adastate_step(args, device="cpu", cfg=cfg)
    assert out["tokens"] == 4 * 4 * 6 and out["keys"] == 8 * 4 * 6
    assert out["ms"] > 0 and out["tflop"] > 0


def test_flop_count_of_the_1_3b_step():
    cfg = WanConfig()
    n, keys = 4 * 1560, 8 * 1560
    flops = dit_forward.forward_flops(cfg, n, keys, with_text_kv=False)
    linear = 2 * n * (6 * cfg.dim**2 + 2 * cfg.dim * cfg.ffn_dim) * cfg.num_layers
    attention = 4 * n * (keys + cfg.text_len) * cfg.dim * cfg.num_layers
    head = 2 * n * cfg.dim * 64
    assert flops == linear + attention + head
    assert 30e12 < flops < 31e12  # ~30.5 TFLOP: attention is as costly as the linears here


def test_stream_harness_runs():
    import stream as stream_bench

    from adastate_core.model.random_weights import TINY

    model = stream_bench.build_model(TINY, "cpu", torch.float32)
    cfgs = stream_bench.configs({"height": 32, "width": 32})
    times, sizes = stream_bench.run_streams(model, cfgs, 8, lambda: None)
    assert set(times) == set(cfgs) and all(len(t) == 8 for t in times.values())
    assert sizes["adaptive"][-1] == sizes["adaptive"][3]  # flat
    assert sizes[stream_bench.GROWING][-1] > sizes[stream_bench.GROWING][3]  # grows


def test_stream_ab_ratio_compares_immutable_early_and_late_states():
    import stream as stream_bench

    from adastate_core.model.random_weights import TINY
    from adastate_core.stream import StreamConfig

    model = stream_bench.build_model(TINY, "cpu", torch.float32)
    cfg = StreamConfig(height=32, width=32)
    states = stream_bench.states_at(model, cfg, [2, 6])
    assert states[2].chunk_index == 2 and states[6].chunk_index == 6
    ab = stream_bench.ab_ratio(model, cfg, 2, 6, 3, lambda: None)
    assert ab["early_ms"] > 0 and ab["late_ms"] > 0 and ab["ratio"] > 0
    assert states[2].chunk_index == 2  # the timed states were not changed


def test_encode_benchmark_compares_with_diffusers():
    import pytest

    pytest.importorskip("diffusers")
    import encode

    ours, ref = encode.build_pair(8)
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    r = encode.compare(ours, ref, video, repeats=1, warmup=0)
    assert r["max_err"] < 1e-5 and r["ratio"] > 0


def test_native_model_benchmark_alternates_own_and_external():
    import native_model

    from adastate_core.model.random_weights import TINY
    from adastate_core.stream import StreamConfig

    own, ext = native_model.build(TINY, torch.float32, "cpu", comfyui=False)
    t = native_model.ab({"own": own, "external": ext}, StreamConfig(height=32, width=48), 2,
                        lambda: None, chunk=3)  # fmt: skip
    assert set(t) == {"own", "external"} and all(v > 0 for v in t.values())
