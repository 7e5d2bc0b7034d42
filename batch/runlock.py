"""One run at a time per report: an OS file lock beside it.

The lock is ``flock`` on ``.REPORT.lock``, so the kernel releases it when its process dies: a
lock file left behind by a killed run is simply taken over by the next one. The lock file is
opened without following links (a planted symbolic or hard link is refused, never truncated),
and so is ``.REPORT.pid``, where the holder's pid goes.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ser.errors import SerError
from ser.files import check_still_there, open_own


class RunLocked(SerError):
    """Another run holds the lock of this report."""


def lock_path(report: Path) -> Path:
    return report.with_name(f".{report.name}.lock")


def pid_path(report: Path) -> Path:
    return report.with_name(f".{report.name}.pid")


class HeldLock:
    """The lock a run holds; :meth:`check` notices when its file is gone."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def check(self) -> None:
        """Raise OutputLost when the lock file was removed or replaced (a second run could
        then take a fresh lock on the same report)."""
        check_still_there(self._fd, self.path)


@contextmanager
def run_lock(report: Path) -> Iterator[HeldLock]:
    """Hold the report's lock for the block, or raise RunLocked at once."""
    path = lock_path(report)
    fd = open_own(path, os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"another ser-batch run{_holder(report)} is writing {report} (lock {path}); "
                "not starting"
            ) from None
        _write_pid(pid_path(report))
        try:
            yield HeldLock(path, fd)
        finally:
            pid_path(report).unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the lock


def _write_pid(path: Path) -> None:
    fd = open_own(path, os.O_WRONLY | os.O_CREAT, truncate=True)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)


def _holder(report: Path) -> str:
    try:
        return f" (pid {int(pid_path(report).read_text())})"
    except (OSError, ValueError):
        return ""
