"""Rows committed as they are produced, so a killed run loses nothing it finished.

The journal is a JSON-lines file beside the report: each row is written and flushed to disk
before the next file is scored. A later ``--incremental`` run reads it back; a clean finish
removes it once the report is safely in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO


def journal_path(report: Path) -> Path:
    return report.with_name(f".{report.name}.partial.jsonl")


class Journal:
    """Append-only row log with an fsync per row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] = path.open("a", encoding="utf-8")

    def append(self, row: dict[str, str]) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def read_journal(path: Path) -> list[dict[str, str]]:
    """Rows of a journal; a last line cut short by a crash is ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
