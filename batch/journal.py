"""Rows committed as they are produced, so a killed run loses nothing it finished.

The journal is a JSON-lines file beside the report: each file's row (and its window rows, when
``--segments`` asks for them) is written to it as soon as the file is scored, so a killed
process (kill -9, out of memory) loses no finished row. It is fsynced at most every
:data:`SYNC_EVERY_S` and when closed: a power cut can cost the last fraction of a second of
rows, which the next ``--incremental`` run scores again, while a fsync per row would cost more
than scoring a short clip on a GPU. A later
``--incremental`` run reads it back; a clean finish removes it once the report is safely in
place. A line cut short (a crash, a full disk) is dropped before the next run appends, so the
journal stays readable line by line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ser.files import check_still_there, open_own

_TAIL_CHUNK = 1 << 16
SYNC_EVERY_S = 0.5


def journal_path(report: Path) -> Path:
    return report.with_name(f".{report.name}.partial.jsonl")


@dataclass(frozen=True)
class JournalEntry:
    """One scored file: its report row and its window rows."""

    row: dict[str, str]
    segments: list[dict[str, str]]


class Journal:
    """Append-only row log, fsynced on a clock, never written through a link."""

    def __init__(self, path: Path, *, fresh: bool) -> None:
        """Open ``path``, emptied when ``fresh``, else with a torn last line dropped."""
        self.path = path
        self.rows = 0  # committed by this run
        self._fd = open_own(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, truncate=fresh)
        _drop_torn_tail(self._fd)
        self._synced = time.monotonic()

    def append(self, row: dict[str, str], segments: Sequence[dict[str, str]] = ()) -> bool:
        """Commit one file's rows; returns whether this append also synced (see :meth:`sync`).

        Raises:
            OutputLost: see :meth:`sync`.
        """
        line = json.dumps({"row": row, "segments": list(segments)}, ensure_ascii=False) + "\n"
        _write_all(self._fd, line.encode("utf-8"))
        self.rows += 1
        if time.monotonic() - self._synced < SYNC_EVERY_S:
            return False
        self.sync()
        return True

    def sync(self) -> None:
        """Make the rows written so far durable, after checking the journal is still in place.

        Raises:
            OutputLost: when the journal was removed or replaced (its folder moved or deleted),
                so that the run stops instead of racing a second run on a fresh folder.
        """
        check_still_there(self._fd, self.path)
        os.fsync(self._fd)
        self._synced = time.monotonic()

    def close(self, *, sync: bool = True) -> None:
        """Close it; an empty journal keeps nothing for a next run, so it is removed."""
        if self._fd < 0:
            return
        empty = os.fstat(self._fd).st_size == 0
        if sync and not empty:
            os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        if empty:
            self.path.unlink(missing_ok=True)

    def remove(self) -> None:
        """Close and delete it (the report is in place): nothing left to make durable."""
        self.close(sync=False)
        self.path.unlink(missing_ok=True)


def read_journal(path: Path) -> list[JournalEntry]:
    """Entries of a journal; lines that do not parse (cut short by a crash) are ignored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    entries = []
    for line in data.split(b"\n"):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict) and isinstance(record.get("row"), dict):
            entries.append(JournalEntry(record["row"], list(record.get("segments") or [])))
    return entries


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a full disk may write part, then fail)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _drop_torn_tail(fd: int) -> None:
    """Truncate after the last newline, so the next line starts on a line of its own."""
    size = end = os.fstat(fd).st_size
    keep = 0
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        end = start
    if keep != size:
        os.ftruncate(fd, keep)
