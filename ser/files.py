"""Files ser writes: published atomically, and never through someone else's symbolic link.

Readers never see a half-written model, report or cache entry (:func:`publish`,
:func:`atomic_write`), and a name planted beside a report (a symbolic link or a hard link to
another file, a FIFO) cannot make ser write to, truncate or chmod anything else
(:func:`open_own`).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ser.errors import SerError


class UnsafeFile(SerError):
    """A name ser would write is a symbolic link, a hard link or not a regular file."""


class OutputFailed(SerError):
    """The report or a file beside it could not be written during a run (a full disk)."""


class OutputLost(OutputFailed):
    """A file a run keeps open beside its report was removed or replaced while it ran."""


def publish(temp: Path | str, target: Path | str) -> None:
    """Give ``temp`` ordinary permissions (0666 less the umask) and rename it over ``target``.

    ``temp`` must be on the same file system as ``target`` (create it in the same folder). The
    mode is set through a descriptor opened without following links, so a ``temp`` swapped for
    a symbolic link is refused rather than followed; the rename replaces a link at ``target``
    and never writes through it.
    """
    fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, _ordinary_mode())
    finally:
        os.close(fd)
    os.replace(temp, target)


@contextmanager
def atomic_write(target: Path, *, binary: bool = False) -> Iterator[IO]:
    """Write ``target`` through a fresh temporary file beside it, fsynced, then published.

    The temporary file comes from ``mkstemp`` (exclusive creation, a random name), so no
    pre-existing name is ever opened; on any failure it is removed and ``target`` is untouched.
    Text mode is UTF-8 with newlines as written.
    """
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        text = {} if binary else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, "wb" if binary else "w", **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        publish(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def open_own(path: Path, flags: int, *, truncate: bool = False) -> int:
    """Open a file ser keeps beside a report (journal, lock, pid), refusing any other file.

    ``O_NOFOLLOW`` refuses a symbolic link at ``path``; ``O_NONBLOCK`` makes a planted FIFO fail
    instead of hanging; a hard link (more than one name) would write into another file, so it
    is refused too. ``truncate`` empties the file only after those checks. Returns the
    descriptor.

    Raises:
        UnsafeFile: naming the file and what it is.
        SerError: when it cannot be opened at all.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise UnsafeFile(
                f"{path} is a symbolic link; ser never writes through one (remove it)"
            ) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader
            raise UnsafeFile(f"{path} is not a regular file (remove it)") from None
        raise SerError(f"cannot open {path} ({error.strerror})") from None
    info = os.fstat(fd)
    problem = ""
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_nlink != 1:
        problem = "has other names (a hard link to another file)"
    if problem:
        os.close(fd)
        raise UnsafeFile(f"{path} {problem}; ser never writes through one (remove it)")
    os.set_blocking(fd, True)
    if truncate:
        os.ftruncate(fd, 0)
    return fd


def check_still_there(fd: int, path: Path) -> None:
    """Make sure ``path`` still names the file open as ``fd`` (not removed, moved, replaced).

    Raises:
        OutputLost: otherwise: a run whose journal or lock is gone must stop, or a second run
            could start on a fresh folder and write the same report.
    """
    try:
        now, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
        same = (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)
    except OSError:
        same = False
    if not same:
        raise OutputLost(
            f"{path} was removed or replaced during the run (was the report's folder moved or "
            "deleted?); stopping so that no second run writes the same report"
        )


def _ordinary_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
