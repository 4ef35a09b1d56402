"""Stream configuration (DESIGN.md §2): chunk, state, window and anchor sizes, policy, sampling."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from ..errors import AdaStateError
from .schedule import SigmaSchedule

POLICIES = ("adaptive", "static", "ema", "none", "adaptive+sink")
PIXELS_PER_TOKEN = 16  # VAE 8x spatial compression times the DiT's 2x2 patch
FPS = 16


class StreamConfigError(AdaStateError, ValueError):
    """An invalid stream setting."""


MAX_SECONDS = 1_000_000.0  # ~11.6 days of video: longer requests are surely a typo
MAX_SEED = 2**64 - 1


def _check_seconds(seconds: float, what: str, allow_zero: bool = False) -> None:
    ok = isinstance(seconds, int | float) and not isinstance(seconds, bool)
    if not ok or not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise StreamConfigError(
            f"{what} must be a finite number of seconds {bound}, got {seconds!r}"
        )
    if seconds > MAX_SECONDS:
        raise StreamConfigError(
            f"{what} of {seconds:g} s is more than the {MAX_SECONDS:g} s this tool accepts; "
            "make it shorter (a stopped run can be continued with --resume)"
        )


def parse_steps(text: str) -> tuple[float, ...]:
    """ "1000,750,500,250" -> (1000.0, 750.0, 500.0, 250.0) (CLI flags and node widgets)."""
    parts = str(text).replace(" ", "").split(",")
    try:
        steps = tuple(float(s) for s in parts) if all(parts) else ()
    except ValueError:
        steps = ()
    if not steps:
        raise StreamConfigError(
            f"steps must be comma-separated timesteps, highest first, e.g. 1000,750,500,250; "
            f"got {text!r}"
        )
    return steps


@dataclass(frozen=True)
class StreamConfig:
    """Everything that fixes a stream's output besides the model, the prompt and the seed.

    chunk (C): latent frames generated per chunk. state (S): frames of the adaptive state.
    window (W): cached content frames. anchor_frames (A): frames of a static / EMA sink.
    ema_alpha: EMA decay of the `ema` anchor. steps/shift: the sigma schedule.
    height/width: video size in pixels (multiples of 16).
    """

    height: int = 480
    width: int = 832
    policy: str = "adaptive"
    chunk: int = 3
    state: int = 1
    window: int = 3
    anchor_frames: int = 1
    ema_alpha: float = 0.999
    steps: tuple[float, ...] = (1000.0, 750.0, 500.0, 250.0)
    shift: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("height", "width", "chunk", "state", "window", "anchor_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be a whole number, got {value!r}")
        if problems:
            raise StreamConfigError("invalid stream settings: " + "; ".join(problems))
        try:
            object.__setattr__(self, "steps", tuple(float(s) for s in self.steps))
        except (TypeError, ValueError):
            raise StreamConfigError(
                f"invalid stream settings: steps must be numbers, got {self.steps!r}"
            ) from None
        for name in ("shift", "ema_alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise StreamConfigError(f"invalid stream settings: {name} must be a number")
            if not math.isfinite(value):
                raise StreamConfigError(f"invalid stream settings: {name} must be finite")
        if self.policy not in POLICIES:
            problems.append(
                f"anchor policy {self.policy!r} is unknown; use one of {', '.join(POLICIES)}"
            )
        if self.chunk < 1:
            problems.append(f"chunk must be >= 1 latent frame, got {self.chunk}")
        if self.window < 0:
            problems.append(f"window must be >= 0 frames, got {self.window}")
        if self.uses_state and not 1 <= self.state <= max(self.chunk, 1):
            problems.append(
                f"state must be between 1 and the chunk size ({self.chunk}) for policy "
                f"{self.policy!r} (s_0 is taken from chunk 0), got {self.state}"
            )
        if self.uses_sink and not 1 <= self.anchor_frames <= max(self.chunk, 1):
            problems.append(
                f"anchor_frames must be between 1 and the chunk size ({self.chunk}) for policy "
                f"{self.policy!r} (the anchor is taken from chunk 0), got {self.anchor_frames}"
            )
        if self.policy == "ema" and not 0.0 <= self.ema_alpha < 1.0:
            problems.append(f"ema_alpha must be in [0, 1), got {self.ema_alpha}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            problems.append(f"seed must be a whole number, got {self.seed!r}")
        elif not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed must be between 0 and 2^64-1, got {self.seed}")
        for name, size in (("height", self.height), ("width", self.width)):
            if size <= 0 or size % PIXELS_PER_TOKEN:
                problems.append(
                    f"{name} {size} must be a positive multiple of 16 (e.g. 480x832, 832x480)"
                )
        try:
            SigmaSchedule(self.steps, self.shift)
        except ValueError as err:
            problems.append(str(err))
        if problems:
            raise StreamConfigError("invalid stream settings: " + "; ".join(problems))

    # -- derived -----------------------------------------------------------------------------------

    @property
    def uses_state(self) -> bool:
        return self.policy in ("adaptive", "adaptive+sink")

    @property
    def uses_sink(self) -> bool:
        return self.policy in ("static", "ema", "adaptive+sink")

    @property
    def schedule(self) -> SigmaSchedule:
        return SigmaSchedule(self.steps, self.shift)

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.height // 8, self.width // 8

    def steady(self, chunk_index: int) -> bool:
        """Chunk k runs in steady state (anchor slot + live state) iff content has already been
        evicted: k*C > W. Before that the window is Self-Forcing's plain cache."""
        return chunk_index * self.chunk > self.window

    def frames_after(self, chunks: int) -> int:
        """Video frames decoded from `chunks` chunks: 1 + 4 (chunks*C - 1)."""
        return 0 if chunks <= 0 else 1 + 4 * (chunks * self.chunk - 1)

    def chunks_for_seconds(self, seconds: float, fps: int = FPS) -> int:
        """Fewest chunks whose frames last at least `seconds` (closed form: any length is
        instant to convert)."""
        _check_seconds(seconds, "the video length")
        frames = max(1, math.ceil(seconds * fps))
        return self._chunks_for_frames(frames)

    def chunk_at_seconds(self, seconds: float, fps: int = FPS) -> int:
        """First chunk whose first frame is shown at or after `seconds` (prompt switches)."""
        _check_seconds(seconds, "a prompt switch time", allow_zero=True)
        frames = seconds * fps
        return 0 if frames <= 0 else self._chunks_for_frames(math.ceil(frames))

    def _chunks_for_frames(self, frames: int) -> int:
        """Smallest k >= 1 with frames_after(k) >= frames, i.e. 1 + 4 (kC - 1) >= frames."""
        latents = max(1, -(-(frames - 1) // 4) + 1)  # ceil((frames - 1) / 4) + 1
        return max(1, -(-latents // self.chunk))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StreamConfig:
        data = json.loads(text)
        data["steps"] = tuple(data["steps"])
        return cls(**data)
