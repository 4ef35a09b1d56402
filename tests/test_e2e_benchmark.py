"""benchmarks/e2e.py runs end to end on the CPU at the smallest size (no timing thresholds), so
its GPU mode's code paths stay working; its pure helpers are exact."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from adastate_core import pipeline
from adastate_core.io import background, count_frames
from adastate_core.stream import engine
from adastate_core.stream import iterate as stream_iterate

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import e2e  # noqa: E402


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core CI box OpenMP's spinning threads make the tiny
    convolutions ~10x slower (the figures are not asserted; this keeps the test short)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_e2e_cpu_run_structure(tmp_path, one_thread):
    pytest.importorskip("av")
    args = e2e.parse_args(
        [
            "--cpu", "--chunks", "3", "--height", "32", "--width", "32", "--warmup", "1",
            "--ff-repeats", "1", "--audit-chunks", "1", "--phases", "--profile",
            "--profile-chunks", "1", "--preset", "ultrafast", "--out-dir", str(tmp_path),
        ]
    )  # fmt: skip
    r = e2e.run(args)
    assert r["mode"] == "cpu" and "meaningless" in r["note"]

    run = r["run"]
    video = tmp_path / "e2e.mp4"
    assert run["video"] == str(video)
    assert run["chunks"] == run["chunks_reported"] == len(run["chunk_done_s"]) == 3
    assert run["chunk_frames"] == [9, 12, 12]  # 1 + 4 (3 - 1), then 4 per latent frame
    assert run["frames_written"] == run["frames_in_file"] == count_frames(video) == 33
    assert run["chunk_done_s"] == sorted(run["chunk_done_s"])

    assert r["load_s"] > 0 and r["cold_start_s"] > 0 and len(r["warmup_chunk_s"]) == 1
    ff = r["first_frame"]
    assert ff["first_frame_s"] > 0 and ff["first_frame_incl_init_s"] >= ff["first_frame_s"]
    assert len(ff["repeats_s"]) == 1 and ff["repeat_median_s"] > 0
    assert ff["first_frame_s"] == run["chunk_done_s"][0]
    assert 0 < ff["first_frame_on_host_s"] < ff["first_frame_s"]
    assert run["write_ms_steady_median"] > 0

    s = r["sustained"]
    assert s["from_chunk"] == 2 and s["chunks"] == 1 and s["frames"] == 12  # clamped window
    assert s["fps"] > 0 and s["steady_chunk_ms"] > 0 and s["fps_from_median"] > 0

    phases = r["phases"]
    assert phases["timer"] == "perf_counter"
    for name in e2e.PHASES:
        assert phases[name]["calls"] == 3 and phases[name]["total_ms"] >= 0
    assert r["memory"] is None  # CUDA only

    audit = r["sync_audit"]
    assert audit["enabled"] is False and audit["chunks"] == 1 and audit["total"] == 0
    prof = r["profile"]
    assert prof["chunks"] == 1 and 0 < len(prof["top"]) <= e2e.TOP_KERNELS
    assert prof["attention_kernels"]  # SDPA is seen by name
    for name in ("warmup", "first_frame_0", "audit", "profile"):
        assert (tmp_path / f"{name}.mp4").is_file()

    # the phase wrappers are gone again
    assert stream_iterate.denoise_chunk is engine.denoise_chunk
    assert stream_iterate.update_state is engine.update_state
    assert pipeline.frames_uint8 is background.frames_uint8
    assert pipeline.to_host is background.to_host

    json.dumps(r)  # JSON-ready as it is
    text = e2e.table(r)
    assert "sustained" in text and "first frame on disk" in text and "phases" in text


def test_sustained_figures_from_on_disk_times():
    log = e2e.ChunkLog()
    log.frames = [9 + 12 * k for k in range(30)]
    log.done = [0.5 * k for k in range(30)]  # a chunk on disk every 0.5 s
    s = e2e.sustained(log, 5)
    assert (s["from_chunk"], s["chunks"], s["frames"]) == (5, 25, 25 * 12)
    assert s["seconds"] == pytest.approx(0.5 * 25)
    assert s["fps"] == pytest.approx(24.0) and s["fps_from_median"] == pytest.approx(24.0)
    assert s["realtime_x"] == pytest.approx(1.5) and s["flatness"] == pytest.approx(1.0)
    log.done = [0.5 * k + (0.5 * (k - 19) if k > 19 else 0) for k in range(30)]  # 2x slower
    assert e2e.sustained(log, 5)["flatness"] == pytest.approx(2.0)
    assert e2e.sustained(log, 50)["from_chunk"] == 29  # clamped to the run


def test_gpu_settings_resolve_to_the_real_sizes(monkeypatch):
    monkeypatch.setattr(e2e.torch.cuda, "is_available", lambda: True)
    s = e2e.resolve(e2e.parse_args([]))
    assert s["mode"] == "gpu" and s["dit"] == e2e.WanConfig() and s["vae_dim"] == 96
    assert (s["height"], s["width"], s["chunks"], s["steady_from"]) == (480, 832, 65, 5)
    assert s["dtype"] == e2e.torch.bfloat16
    assert e2e.resolve(e2e.parse_args(["--quick"]))["chunks"] == 10
    cpu = e2e.resolve(e2e.parse_args(["--cpu"]))
    assert cpu["mode"] == "cpu" and cpu["dit"] == e2e.TINY and cpu["chunks"] == 8
    monkeypatch.setattr(e2e.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="CUDA is not available"):
        e2e.resolve(e2e.parse_args(["--gpu"]))


class _FakeEvent:
    """Stands in for torch.cuda.Event: a 'GPU timeline' that is the host clock."""

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        self.t = None

    def record(self):
        import time

        self.t = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.t - self.t) * 1e3


def test_phases_cuda_branch_records_event_pairs(monkeypatch):
    monkeypatch.setattr(e2e.torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(e2e.torch.cuda, "synchronize", lambda: None)
    phases = e2e.Phases(cuda=True)
    work = phases.wrap("denoise", lambda x: x + 1)
    assert [work(i) for i in range(4)] == [1, 2, 3, 4]
    out = phases.summary(first=2)
    assert out["timer"] == "cuda events" and out["denoise"]["calls"] == 4
    assert out["denoise"]["steady_median_ms"] >= 0 and out["decode"]["calls"] == 0


def test_sync_warnings_are_counted_by_site():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
        warnings.warn("something else", UserWarning, stacklevel=1)
    sites, other = e2e.count_sync_warnings(caught)
    assert sum(sites.values()) == 3 and len(sites) == 1
    (site,) = sites
    assert site.startswith("tests/test_e2e_benchmark.py:")
    assert sum(other.values()) == 1 and "something else" in next(iter(other))
