"""Prompt cleaning exactly as the official Wan text pipeline does it (REFERENCE.md §4)."""

from __future__ import annotations

import html
import re

try:  # optional: the official pipeline runs ftfy, but a missing ftfy only skips mojibake repair
    import ftfy
except ImportError:  # pragma: no cover - depends on the environment
    ftfy = None

_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Wan's `whitespace_clean(basic_clean(text))`.

    ftfy fix (mojibake, broken unicode; skipped when ftfy is not installed), HTML unescape twice
    (`&amp;lt;` -> `<`), every whitespace run -> one space, strip. The cleaned text is what gets
    tokenised and what keys the embedding cache.
    """
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip()
