"""Keeping users' files safe: what exists at an output, which adastate video it holds, a lock
against a second process writing the same output, and removing an output only when asked.

The rule every command follows (docs/architecture.md): a run writes only files it creates
for itself (exclusively, never through a symbolic link), continues only a video whose stored
prompt, seed and settings are its own, and replaces an existing file only when the user named
it with --overwrite (or a batch redoes a video it made itself)."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import AdaStateError
from .io import count_frames, format_of, read_metadata
from .io.video import PNG_DIGITS


class OutputError(AdaStateError):
    """An output that cannot be used as asked (exists, in use, not ours)."""


# -- what is there -------------------------------------------------------------------------------


def png_frames(path: Path) -> list[Path]:
    """The frame files (and leftover partial frames) of a PNG output `name.png`."""
    folder, stem = path.parent, path.stem
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(stem) + rf"_\d{{{PNG_DIGITS},}}\.png(\.partial)?")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def existing(path: Path) -> list[Path]:
    """What already occupies output `path`: the file (or link, or folder) itself, or for PNG
    output its frame files. Empty if the output is free."""
    if format_of(path) == "png" and path.suffix.lower() == ".png":
        return png_frames(path)
    return [path] if os.path.lexists(path) else []


@dataclass(frozen=True)
class VideoInfo:
    """An adastate video found at an output: its stored identity and length."""

    prompt: str | None
    seed: str | None
    settings: str | None
    generator: str | None
    frames: int

    @property
    def ours(self) -> bool:
        return bool(self.generator) and self.generator.startswith("adastate")

    def differs(self, prompt: str, seed: str, settings: str) -> list[str]:
        """The identity fields that differ from a run's (empty: the same video)."""
        out = []
        for name, want in (("prompt", prompt), ("seed", seed), ("settings", settings)):
            if getattr(self, name) != want:
                out.append(name)
        return out


def video_info(path: Path) -> VideoInfo | None:
    """The adastate identity of the video at `path`, or None if nothing readable is there."""
    if os.path.islink(path):
        return None
    try:
        meta = read_metadata(path)
        frames = count_frames(path)
    except Exception:  # unreadable, foreign or damaged: not a video we can vouch for
        return None
    return VideoInfo(
        meta.get("prompt"), meta.get("seed"), meta.get("settings"), meta.get("generator"), frames
    )


def remove(path: Path) -> None:
    """Delete what occupies output `path` (the user asked: --overwrite, or a batch redoing its
    own video). Only regular files are removed, and a link is removed, never what it points
    to; anything else is refused."""
    for item in existing(path):
        if item.is_symlink() or item.is_file():  # a link itself, never its target
            item.unlink()
        else:
            raise OutputError(
                f"{item} is not a regular file (a folder or a device); it is never replaced: "
                "choose another output"
            )


# -- one writer per output -----------------------------------------------------------------------


class OutputLock:
    """An exclusive lock on an output for the whole run (`fcntl.flock` on a hidden lock file
    beside it), so a second adastate process writing the same output is refused at once."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock_path = self.path.parent / f".{self.path.name}.adastate-lock"
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking (documented)
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(100):
            try:
                fd = os.open(self.lock_path, flags, 0o644)
            except OSError as err:
                raise OutputError(
                    f"cannot lock {self.path} ({self.lock_path}: {err.strerror or err}); "
                    "choose another output"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise OutputError(
                    f"{self.path} is in use by another adastate process"
                    + (f" (pid {holder})" if holder else "")
                    + "; wait for it to finish or choose another output"
                ) from None
            # the file may have been removed by its previous holder after we opened it
            try:
                same = os.fstat(fd).st_ino == os.lstat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return self
            os.close(fd)
        raise OutputError(f"could not lock {self.path}: the lock file keeps changing")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.lock_path)  # still held: no one else can be between open and lock
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""


def free_name(folder: Path, stem: str, ext: str) -> Path:
    """`folder/stem_001.ext`, or the next number not taken by any file or PNG frame set."""
    for n in range(1, 1_000_000):
        candidate = folder / f"{stem}_{n:03d}.{ext}"
        if not existing(candidate) and not os.path.lexists(
            candidate.parent / f".{candidate.name}.adastate-lock"
        ):
            return candidate
    raise OutputError(f"no free output name for {stem} in {folder}; give one with --out")
