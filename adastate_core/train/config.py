"""Training settings (DESIGN.md §2.6; research/training_dmd.md §1.6, §2). Defaults are the
paper's recipe on Self-Forcing's hyper-parameters (the paper's own table lost its numbers in
extraction; research/training_dmd.md §7 lists what is assumed)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import AdaStateError
from ..stream import StreamConfig


class TrainConfigError(AdaStateError, ValueError):
    """An invalid training setting."""


# purposes of random draws: every draw is a function of (seed, iteration, sample, purpose)
GEN_EXIT, CRITIC_EXIT, GEN_ROLLOUT, CRITIC_ROLLOUT = 1, 2, 3, 4
GEN_T, GEN_NOISE, CRITIC_T, CRITIC_NOISE, DATA = 5, 6, 7, 8, 9


def derive_seed(seed: int, *parts: int) -> int:
    """A well-mixed 63-bit seed from (seed, parts...): independent streams per purpose."""
    state = np.random.SeedSequence([seed % 2**64, *parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31 | int(state[1]) >> 1) & (2**63 - 1)


@dataclass(frozen=True)
class TrainConfig:
    """iterations: critic updates (Self-Forcing's "iteration"); the generator is updated on
    every `gen_every`-th one (iteration 0 included). batch: samples per update, run as
    micro-batches of `micro_batch` (gradients accumulated; split over processes under
    torchrun). alpha: slope of the horizon weight w_f = 1 + α f/(F-1) (mean 1).
    chunks: rollout length (7 x C=3 = 21 latent frames). stream: window / policy / size of the
    rollout (the inference engine's settings). leak_content_kv: Self-Forcing's cross-chunk
    gradient leak, for ablation only. normaliser: DMD gradient normaliser, "sample" (Self-
    Forcing: mean |x - real| per sample) or "frame" (per sample and frame)."""

    iterations: int = 1000
    batch: int = 4
    micro_batch: int = 1
    gen_every: int = 5
    alpha: float = 2.0
    guidance: float = 3.0
    gen_lr: float = 2e-6
    critic_lr: float = 4e-7
    beta1: float = 0.0
    beta2: float = 0.999
    weight_decay: float = 0.01
    clip: float = 10.0
    ema_decay: float = 0.99
    ema_start: int = 200
    chunks: int = 7
    seed: int = 0
    leak_content_kv: bool = False
    normaliser: str = "sample"
    checkpointing: bool = True
    stream: StreamConfig = field(default_factory=StreamConfig)

    def __post_init__(self) -> None:
        problems = []
        ints = {
            "iterations": 1,
            "batch": 1,
            "micro_batch": 1,
            "gen_every": 1,
            "ema_start": 0,
            "chunks": 1,
            "seed": 0,
        }
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                problems.append(f"{name} must be a whole number >= {low}, got {value!r}")
        floats = {
            "alpha": (0.0, 1e3),
            "guidance": (0.0, 1e3),
            "gen_lr": (0.0, 1.0),
            "critic_lr": (0.0, 1.0),
            "beta1": (0.0, 1.0),
            "beta2": (0.0, 1.0),
            "weight_decay": (0.0, 1.0),
            "clip": (0.0, 1e9),
            "ema_decay": (0.0, 1.0),
        }
        for name, (low, high) in floats.items():
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or not low <= value <= high:
                problems.append(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
        if isinstance(self.beta2, float) and self.beta2 >= 1.0:
            problems.append("beta2 must be below 1")
        if self.normaliser not in ("sample", "frame"):
            problems.append(f"normaliser must be 'sample' or 'frame', got {self.normaliser!r}")
        if not problems and self.micro_batch > self.batch:
            problems.append(
                f"micro_batch ({self.micro_batch}) cannot exceed the batch ({self.batch})"
            )
        if not isinstance(self.stream, StreamConfig):
            problems.append("stream must be a StreamConfig")
        if problems:
            raise TrainConfigError("invalid training settings: " + "; ".join(problems))

    @property
    def frames(self) -> int:
        """Content latent frames per rollout (scored by the DMD loss)."""
        return self.chunks * self.stream.chunk

    @property
    def num_steps(self) -> int:
        return len(self.stream.steps)

    def generator_updates_before(self, iteration: int) -> int:
        """Generator updates in iterations 0 .. iteration-1."""
        return -(-iteration // self.gen_every)

    def identity(self) -> dict:
        """Every setting that changes the numbers of a run (a resume must match it);
        `iterations` is left out so a finished run can be extended."""
        data = asdict(self)
        data.pop("iterations")
        data["stream"] = json.loads(self.stream.to_json())
        return data

    def to_json(self) -> str:
        data = asdict(self)
        data["stream"] = json.loads(self.stream.to_json())
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data = json.loads(text)
        data["stream"] = StreamConfig.from_json(json.dumps(data["stream"]))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
