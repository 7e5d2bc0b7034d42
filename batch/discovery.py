"""Which files a run scores: named files always, audio files found under named directories."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ser.audio import AUDIO_EXTENSIONS


@dataclass(frozen=True)
class Found:
    """A path to score, or a path that could not be walked (``error`` says why)."""

    path: Path
    error: str = ""


def discover(inputs: Iterable[str | Path]) -> Iterator[Found]:
    """Yield every input file, and every audio file below every input directory, in sorted order.

    A missing input or an unreadable directory yields an entry with ``error`` set, never raises.
    """
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists():
            yield Found(path)
        else:
            yield Found(path, "no such file or directory")


def _walk(root: Path) -> Iterator[Found]:
    errors: list[OSError] = []
    found = []
    for folder, dirs, files in os.walk(root, onerror=errors.append):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                found.append(Path(folder) / name)
    for path in sorted(found):
        yield Found(path)
    for error in errors:
        yield Found(Path(error.filename or root), f"cannot read directory ({error.strerror})")
