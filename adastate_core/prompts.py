"""Prompt text: timed schedules inside one video, and batches of videos.

Schedule syntax (one video): `"0:a cat walks | 5:the cat runs"` — switch times in seconds,
`|`-separated; a plain prompt without a time is one prompt for the whole video. The same
lines can come from a file, one `seconds: prompt` per line (`#` starts a comment).
Batch files (`--prompts FILE`): one video per non-empty line; each line may itself be a
timed schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AdaStateError

_TIMED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:：]\s*(.*)$", re.S)


class PromptError(AdaStateError, ValueError):
    pass


@dataclass(frozen=True)
class TimedPrompt:
    seconds: float
    text: str


def parse_schedule(text: str, *, from_zero: bool = True) -> list[TimedPrompt]:
    """`"0:a | 5:b"` or a plain prompt -> [(0, a), (5, b)], sorted, starting at 0.
    `from_zero=False` also accepts a schedule whose first switch is later (the caller has a
    prompt for the start, e.g. the node's `positive`)."""
    parts = [
        p.strip()
        for p in re.split(r"\s*\|\s*|\n", text)
        if p.strip() and not p.strip().startswith("#")
    ]
    if not parts:
        raise PromptError("the prompt is empty; write what the video should show")
    timed = [_TIMED.match(p) for p in parts]
    if not any(timed) and len(parts) == 1:
        return [TimedPrompt(0.0, parts[0])]
    if not all(timed):
        bad = next(p for p, m in zip(parts, timed) if not m)
        raise PromptError(
            f"cannot read the time of {bad!r}: in a prompt schedule every part is "
            "'seconds: prompt', e.g. \"0:a cat walks | 5:the cat runs\""
        )
    out = [TimedPrompt(float(m.group(1)), m.group(2).strip()) for m in timed]
    out.sort(key=lambda p: p.seconds)
    if from_zero and out[0].seconds != 0:
        raise PromptError(
            f"the prompt schedule starts at {out[0].seconds:g} s; it needs a prompt at 0 s"
        )
    if len({p.seconds for p in out}) != len(out):
        raise PromptError("two prompts in the schedule start at the same time")
    for p in out:
        if not p.text:
            raise PromptError(f"the prompt at {p.seconds:g} s is empty")
    return out


def read_schedule_file(path: str | Path) -> list[TimedPrompt]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise PromptError(f"cannot read the prompt schedule {path}: {err.strerror}") from None
    return parse_schedule(text)


def read_batch_file(path: str | Path) -> list[list[TimedPrompt]]:
    """One schedule per non-empty, non-comment line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise PromptError(f"cannot read the prompts file {path}: {err.strerror}") from None
    batch = [
        parse_schedule(line) for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    if not batch:
        raise PromptError(f"the prompts file {path} has no prompts (one video per line)")
    return batch


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    s = re.sub(r"[^a-zA-Z0-9]+", "_", text.lower()).strip("_")
    return s[:length].rstrip("_") or "video"
