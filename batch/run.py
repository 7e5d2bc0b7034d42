"""One scoring run: discover, skip what is done, score the rest, commit rows, write the report.

Order of safety: rows go to a journal as they are produced (fsync per row); the report is
written to a temporary file and renamed into place only at the end; the journal is removed only
after that. A run killed at any point leaves the previous report intact and its finished rows
in the journal, and the next ``--incremental`` run picks both up.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile
import soxr

from ser import __version__
from ser.batch.discovery import Found, discover, read_file_list
from ser.batch.frontends import frontend_for
from ser.batch.journal import Journal, journal_path, read_journal
from ser.batch.progress import Progress
from ser.batch.report import (
    read_report,
    report_columns,
    report_format,
    report_row,
    segment_columns,
    segment_rows,
    write_report,
)
from ser.batch.runlock import run_lock
from ser.batch.scoring import prepare_all, score_prepared
from ser.batch.session import ScoringModel
from ser.files import publish


@dataclass(frozen=True)
class RunOptions:
    output: str
    fmt: str | None = None
    model: str = "forest"
    device: str = "cpu"
    threads: int | None = None
    hop: float | None = None
    batch_size: int = 16
    workers: int = 2
    segments: Path | None = None
    files_from: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    incremental: bool = False
    keep_removed: bool = False


@dataclass(frozen=True)
class RunOutcome:
    files: int
    scored: int
    reused: int
    failed: int


def run_scoring(inputs: Sequence[str | Path], options: RunOptions) -> RunOutcome:
    """Score ``inputs`` into ``options.output``; see the module docstring for the guarantees."""
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    model = ScoringModel(options.model, device=options.device, threads=options.threads)
    frontend_for(model.metadata, hop_s=options.hop)  # fail now on a model we cannot feed
    fmt = report_format(options.output, options.fmt)
    to_file = options.output != "-"
    report = Path(options.output)
    with run_lock(report) if to_file else nullcontext():
        sources = [*inputs, *(read_file_list(options.files_from) if options.files_from else [])]
        found = list(discover(sources, include=options.include, exclude=options.exclude))
        previous = _previous_rows(report, fmt) if options.incremental and to_file else []
        done = {_row_key(row): row for row in previous if row.get("status") == "ok"}
        sha = model.sha256[:16]
        todo = [f for f in found if _found_key(f, sha) not in done]

        progress = Progress(len(todo))
        journal = Journal(journal_path(report)) if to_file else None
        if journal is not None and not options.incremental:
            journal.path.write_text("")  # a fresh run starts a fresh journal
        new_rows: dict[int, dict[str, str]] = {}
        segments: list[dict[str, str]] = []
        prepared = prepare_all(
            todo, lambda: frontend_for(model.metadata, hop_s=options.hop),
            model.metadata.sample_rate, options.workers, ahead=options.batch_size,
        )  # fmt: skip
        for index, result in enumerate(score_prepared(prepared, model, options.batch_size)):
            row = report_row(result, model.labels, model.name, model.sha256)
            if journal is not None:
                journal.append(row)
            new_rows[index] = row
            if options.segments is not None:
                segments.extend(segment_rows(result, model.labels))
            progress.update(result.ok, result.duration_s or 0.0)
        summary = progress.close()

        new_iter = iter(new_rows[i] for i in range(len(todo)))
        rows = [done.get(_found_key(f, sha)) or next(new_iter) for f in found]
        if options.keep_removed:
            present = {str(f.path) for f in found}
            rows += [row for row in previous if row["path"] not in present]
        write_report(options.output, rows, report_columns(model.labels), fmt)
        if options.segments is not None:
            write_report(str(options.segments), segments, segment_columns(model.labels), "csv")
        failed = sum(row["status"] != "ok" for row in rows)
        if to_file:
            _write_provenance(report, model, started_at, len(rows), failed, options)
            journal.remove()
    reused = len(found) - len(todo)
    print(f"{summary}; {reused} unchanged files kept -> {options.output}", file=sys.stderr)
    return RunOutcome(len(rows), len(todo), reused, failed)


def provenance_path(report: Path) -> Path:
    return report.with_name(f"{report.name}.provenance.json")


def _previous_rows(report: Path, fmt: str) -> list[dict[str, str]]:
    """The last report's rows, then the journal's (a killed run's), later rows winning."""
    rows = {(_row_key(r), r["path"]): r for r in read_report(report, fmt)}
    for row in read_journal(journal_path(report)):
        rows[(_row_key(row), row["path"])] = row
    return list(rows.values())


def _row_key(row: dict[str, str]) -> tuple[str, str, str, str]:
    return (
        row["path"],
        row.get("size_bytes", ""),
        row.get("mtime_ns", ""),
        row.get("model_sha256", ""),
    )


def _found_key(found: Found, sha: str) -> tuple[str, str, str, str]:
    size = "" if found.size_bytes is None else str(found.size_bytes)
    mtime = "" if found.mtime_ns is None else str(found.mtime_ns)
    return str(found.path), size, mtime, sha


def _write_provenance(
    report: Path, model: ScoringModel, started_at: str, files: int, failed: int, options: RunOptions
) -> None:
    """A sidecar that says which model, runtime and versions produced the report."""
    info = {
        "report": report.name,
        "model": str(model.path),
        "model_sha256": model.sha256,
        "execution_provider": model.provider,
        "started": started_at,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": files,
        "failed": failed,
        "options": {
            "hop": options.hop,
            "batch_size": options.batch_size,
            "incremental": options.incremental,
        },
        "versions": {
            "ser": __version__,
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "soundfile": soundfile.__version__,
            "soxr": soxr.__version__,
        },
    }
    path = provenance_path(report)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(info, indent=2))
    publish(temp, path)
