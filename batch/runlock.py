"""One run at a time per report: an OS file lock beside it.

The lock is ``flock``-based (filelock), so the kernel releases it when its process dies: a lock
file left behind by a killed run is simply taken over by the next one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ser.errors import SerError


class RunLocked(SerError):
    """Another run holds the lock of this report."""


def lock_path(report: Path) -> Path:
    return report.with_name(f".{report.name}.lock")


@contextmanager
def run_lock(report: Path) -> Iterator[None]:
    """Hold the report's lock for the block, or raise RunLocked at once."""
    path = lock_path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        holder = _holder(path)
        raise RunLocked(
            f"another ser-batch run{holder} is writing {report} (lock {path}); not starting"
        ) from None
    try:
        path.with_suffix(".pid").write_text(str(os.getpid()))
        yield
    finally:
        path.with_suffix(".pid").unlink(missing_ok=True)
        lock.release()


def _holder(path: Path) -> str:
    try:
        return f" (pid {int(path.with_suffix('.pid').read_text())})"
    except (OSError, ValueError):
        return ""
