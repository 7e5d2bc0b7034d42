"""Which files a run scores, in a deterministic order.

Named files are always taken; below named directories (walked recursively, following symbolic
links but never in a loop) files with an audio extension are taken, or those matching
``include`` globs when given. ``exclude`` globs drop files and whole directories. Missing inputs,
unreadable directories and symlink loops come out as entries with ``error`` set, never raise.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ser.audio import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Found:
    """A path to score (with its size and modification time), or why it cannot be walked."""

    path: Path
    error: str = ""
    size_bytes: int | None = None
    mtime_ns: int | None = None

    @classmethod
    def of(cls, path: Path) -> Found:
        """A found file, stamped with its size and modification time now."""
        try:
            stat = path.stat()
        except OSError as error:
            return cls(path, f"cannot read file ({error.strerror})")
        return cls(path, size_bytes=stat.st_size, mtime_ns=stat.st_mtime_ns)


def discover(
    inputs: Iterable[str | Path], *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Iterator[Found]:
    """Yield every input file and every matching file below every input directory."""
    for raw in inputs:
        path = Path(raw)
        if _matches(path, exclude):
            continue
        if path.is_dir():
            yield from _walk(path, include, exclude)
        elif path.exists():
            yield Found.of(path)
        elif path.is_symlink():
            yield Found(path, _link_problem(path))
        else:
            yield Found(path, "no such file or directory")


def read_file_list(source: str) -> list[str]:
    """Paths, one per line, from a file or ``-`` (standard input); blank lines are skipped."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        lines = Path(source).read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str]) -> Iterator[Found]:
    errors: list[OSError] = []
    found: list[Found] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, onerror=errors.append, followlinks=True):
        stat = os.stat(folder)
        if (stat.st_dev, stat.st_ino) in seen:
            found.append(Found(Path(folder), "symlink loop: directory already visited"))
            dirs.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not _matches(Path(folder) / d, exclude))
        for name in files:
            path = Path(folder) / name
            if _matches(path, exclude) or not _wanted(path, include):
                continue
            found.append(Found.of(path) if path.exists() else Found(path, _link_problem(path)))
    yield from sorted(found, key=lambda item: item.path)
    for error in errors:
        yield Found(Path(error.filename or root), f"cannot read directory ({error.strerror})")


def _wanted(path: Path, include: Sequence[str]) -> bool:
    if include:
        return _matches(path, include)
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _matches(path: Path, patterns: Sequence[str]) -> bool:
    text = path.as_posix()
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(text, p) for p in patterns)


def _link_problem(path: Path) -> str:
    try:
        path.resolve(strict=True)
    except RuntimeError:
        return "symlink loop"
    except OSError as error:
        if error.errno == 40:  # ELOOP
            return "symlink loop"
        return f"broken symbolic link ({error.strerror})"
    return "cannot read file"
