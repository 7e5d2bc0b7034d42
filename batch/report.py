"""Report rows and formats (CSV, JSON lines, Parquet): safe cells, atomic replacement."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ser.batch.scoring import FileScore
from ser.errors import SerError
from ser.files import publish


class UsageError(SerError):
    """An output that cannot be written as asked."""


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
        "size_bytes",
        "mtime_ns",
        "model_sha256",
    ]


def segment_columns(labels: Sequence[str]) -> list[str]:
    return ["path", "start_s", "end_s", "label", "confidence", *(f"p_{label}" for label in labels)]


def report_row(
    score: FileScore, labels: Sequence[str], model_name: str, model_sha256: str = ""
) -> dict[str, str]:
    """One report row; failed files keep their path and carry the reason in ``error``."""
    row = dict.fromkeys(report_columns(labels), "")
    row.update(path=str(score.path), model=model_name, status="ok" if score.ok else "error")
    row["model_sha256"] = model_sha256[:16]
    if score.found.size_bytes is not None:
        row.update(size_bytes=str(score.found.size_bytes), mtime_ns=str(score.found.mtime_ns))
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
    """Prefix a cell that a spreadsheet would run as a formula with a single quote.

    A cell that already starts with a quote gets one more, so :func:`restore` is exact.
    """
    return f"'{cell}" if cell.startswith((*_FORMULA_STARTS, "'")) else cell


def restore(cell: str) -> str:
    """Undo :func:`neutralise` (for reading a CSV report back)."""
    if cell.startswith("'") and cell[1:2] and cell[1:].startswith((*_FORMULA_STARTS, "'")):
        return cell[1:]
    return cell


def report_format(path: str, explicit: str | None = None) -> str:
    """``explicit`` if given, else from the extension (.csv, .jsonl/.ndjson, .parquet), else csv."""
    if explicit:
        return explicit
    suffix = Path(path).suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}.get(suffix, "csv")


def write_report(
    path: str, rows: Sequence[dict[str, str]], columns: Sequence[str], fmt: str
) -> None:
    """Write all rows; a file is replaced atomically (temporary file, fsync, rename).

    Until the rename the previous report stays intact, whatever happens (a crash, a full disk).
    ``-`` writes CSV or JSON lines to standard output.
    """
    if fmt == "parquet":
        _write_parquet(path, rows, columns)
        return
    if path == "-":
        _write_text(sys.stdout, rows, columns, fmt)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            _write_text(handle, rows, columns, fmt)
            handle.flush()
            os.fsync(handle.fileno())
        publish(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_report(path: Path, fmt: str) -> list[dict[str, str]]:
    """Rows of an earlier report (missing file: no rows); values are strings as written."""
    if not path.is_file():
        return []
    if fmt == "parquet":
        return [{k: "" if v is None else str(v) for k, v in row.items()}
                for row in _pyarrow().parquet.read_table(path).to_pylist()]  # fmt: skip
    with path.open(newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        return [{k: restore(v or "") for k, v in row.items()} for row in csv.DictReader(handle)]


def _write_text(handle: IO[str], rows: Sequence[dict[str, str]], columns: Sequence[str], fmt: str):
    if fmt == "jsonl":
        for row in rows:
            handle.write(
                json.dumps({c: row.get(c, "") for c in columns}, ensure_ascii=False) + "\n"
            )
        return
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: neutralise(row.get(c, "")) for c in columns})


def _write_parquet(path: str, rows: Sequence[dict[str, str]], columns: Sequence[str]) -> None:
    if path == "-":
        raise UsageError("parquet cannot be written to standard output")
    arrow = _pyarrow()
    table = arrow.table({c: [row.get(c, "") for row in rows] for c in columns})
    target = Path(path)
    temp = target.with_name(f".{target.name}.tmp")
    arrow.parquet.write_table(table, temp)
    publish(temp, target)


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "parquet reports need pyarrow: pip install 'ser-toolkit[parquet]'"
        ) from None
    return pyarrow
