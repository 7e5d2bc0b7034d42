"""Report rows and the CSV writer: spreadsheet-safe cells, atomic replacement of the report."""

from __future__ import annotations

import csv
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ser.batch.scoring import FileScore
from ser.files import publish

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def report_columns(labels: Sequence[str]) -> list[str]:
    return [
        "path",
        "duration_s",
        "label",
        "confidence",
        *(f"p_{label}" for label in labels),
        "model",
        "status",
        "error",
    ]


def segment_columns(labels: Sequence[str]) -> list[str]:
    return ["path", "start_s", "end_s", "label", "confidence", *(f"p_{label}" for label in labels)]


def report_row(score: FileScore, labels: Sequence[str], model_name: str) -> dict[str, str]:
    """One report row; failed files keep their path and carry the reason in ``error``."""
    row = dict.fromkeys(report_columns(labels), "")
    row.update(path=str(score.path), model=model_name, status="ok" if score.ok else "error")
    if score.duration_s is not None:
        row["duration_s"] = f"{score.duration_s:.3f}"
    if score.probs is not None:
        row.update(_probability_cells(score.probs, labels))
    row["error"] = score.error
    return row


def segment_rows(score: FileScore, labels: Sequence[str]) -> list[dict[str, str]]:
    """One row per window of a scored file."""
    return [
        {
            "path": str(score.path),
            "start_s": f"{segment.start_s:.3f}",
            "end_s": f"{segment.end_s:.3f}",
            **_probability_cells(segment.probs, labels),
        }
        for segment in score.segments
    ]


def _probability_cells(probs, labels: Sequence[str]) -> dict[str, str]:
    best = int(probs.argmax())
    return {
        "label": labels[best],
        "confidence": f"{probs[best]:.4f}",
        **{f"p_{label}": f"{p:.4f}" for label, p in zip(labels, probs, strict=True)},
    }


def neutralise(cell: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with a single quote."""
    return f"'{cell}" if cell.startswith(_FORMULA_STARTS) else cell


class CsvReport:
    """Write rows to a temporary file beside ``path``, renamed over it on :meth:`commit`.

    Until commit the previous report stays intact, whatever happens to the run; ``-`` writes to
    standard output instead.
    """

    def __init__(self, path: str, columns: Sequence[str]) -> None:
        self.path = None if path == "-" else Path(path)
        self._temp: Path | None = None
        if self.path is None:
            self._handle: IO[str] = sys.stdout
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(
                dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
            )
            self._temp = Path(name)
            self._handle = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._handle, fieldnames=list(columns), lineterminator="\n")
        self._writer.writeheader()

    def write(self, row: dict[str, str]) -> None:
        self._writer.writerow({key: neutralise(value) for key, value in row.items()})

    def commit(self) -> None:
        """Flush to disk and atomically replace the report."""
        self._handle.flush()
        if self._temp is None or self.path is None:
            return
        os.fsync(self._handle.fileno())
        self._handle.close()
        publish(self._temp, self.path)
        self._temp = None

    def abort(self) -> None:
        """Drop the temporary file; the previous report is untouched."""
        if self._temp is not None:
            self._handle.close()
            self._temp.unlink(missing_ok=True)
            self._temp = None
