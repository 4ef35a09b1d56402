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
        if text.strip().startswith("#"):
            raise PromptError(
                "the prompt is only a comment (a part starting with '#' is ignored); write "
                "what the video should show"
            )
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
            f"the prompt schedule starts at {out[0].seconds:g} s; it needs a prompt at 0 s "
            f"(a prompt that itself starts with a time, like {parts[0][:20]!r}, is read as a "
            "switch time: write it as '0: ' followed by the prompt)"
        )
    if len({p.seconds for p in out}) != len(out):
        raise PromptError("two prompts in the schedule start at the same time")
    for p in out:
        if not p.text:
            raise PromptError(f"the prompt at {p.seconds:g} s is empty")
    return out


def _read_text(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise PromptError(
            f"the {what} {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    except OSError as err:
        raise PromptError(f"cannot read the {what} {path}: {err.strerror}") from None
    return text.removeprefix("\ufeff")  # a byte-order mark (Windows editors)


def read_schedule_file(path: str | Path) -> list[TimedPrompt]:
    path = Path(path)
    return parse_schedule(_read_text(path, "prompt schedule"))


def read_batch_lines(path: str | Path) -> list[tuple[int, list[TimedPrompt]]]:
    """(line number, schedule) per non-empty, non-comment line; an error names its line."""
    path = Path(path)
    batch = []
    for number, line in enumerate(_read_text(path, "prompts file").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            batch.append((number, parse_schedule(line)))
        except PromptError as err:
            raise PromptError(f"{path} line {number}: {err}") from None
    if not batch:
        raise PromptError(f"the prompts file {path} has no prompts (one video per line)")
    return batch


def read_batch_file(path: str | Path) -> list[list[TimedPrompt]]:
    """One schedule per non-empty, non-comment line."""
    return [schedule for _, schedule in read_batch_lines(path)]


def slug(text: str, length: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    s = re.sub(r"[^a-zA-Z0-9]+", "_", text.lower()).strip("_")
    return s[:length].rstrip("_") or "video"
