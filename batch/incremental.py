"""What an ``--incremental`` run keeps, rescores and drops, and its guard against wiping a report.

A row is kept when its file's key is unchanged: path, size, modification time, model hash and
the settings that shaped it (window and hop, or the feature set). With ``--segments`` a file is
kept only if its window rows are at hand too (from the previous segments file or the journal).
Rows of files no longer found are dropped, except those of an input that yielded no file at
all (an unmounted share looks like that) and all of them under ``--keep-removed``; a run that
would drop more than :data:`SHRINK_LIMIT` of the report's rows is refused unless allowed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ser.batch.discovery import Discovery, Found
from ser.batch.journal import read_journal
from ser.batch.report import KEY_COLUMNS, UsageError, cell, path_cell, read_report
from ser.errors import SerError

SHRINK_LIMIT = 0.5
"""The largest share of a report's rows one run may drop without ``--allow-shrink``."""

Key = tuple[str, ...]
Row = dict[str, str]


class ShrinkRefused(SerError):
    """The run would drop more of the report's rows than the guard allows."""


def row_key(row: Row) -> Key:
    return (row.get("path", ""), *(row.get(column, "") for column in KEY_COLUMNS))


def found_key(found: Found, sha: str, settings: str) -> Key:
    """The key :func:`row_key` gives the row of ``found``, its cells made as a report's are."""
    size, mtime = cell("size_bytes", found.size_bytes), cell("mtime_ns", found.mtime_ns)
    return path_cell(found.path), size, mtime, sha[:16], settings


@dataclass(frozen=True)
class Previous:
    """What earlier runs left: rows by path (the journal's win) and window rows by file key."""

    rows: dict[str, Row]
    segments: dict[Key, list[Row]]

    @classmethod
    def read(
        cls,
        report: Path,
        fmt: str,
        journal: Path,
        segments: Path | None,
        segments_fmt: str = "csv",
    ) -> Previous:
        """The last report and segments file, then a killed run's journal on top.

        Rows come back as text cells whether the files hold typed values or (written by an
        earlier version) text, so their keys compare equal to :func:`found_key`'s.

        Raises:
            UsageError: when the previous report or segments file cannot be read.
        """
        rows = {row["path"]: row for row in _read(report, fmt) if "path" in row}
        by_key: dict[Key, list[Row]] = {}
        for row in _read(segments, segments_fmt) if segments is not None else []:
            by_key.setdefault(row_key(row), []).append(row)
        for entry in read_journal(journal):
            rows[entry.row.get("path", "")] = entry.row
            if entry.segments:
                by_key[row_key(entry.row)] = entry.segments
        return cls(rows, by_key)

    @classmethod
    def none(cls) -> Previous:
        return cls({}, {})

    def segments_of(self, row: Row) -> list[Row]:
        """The window rows scored with ``row`` (none when they were not kept)."""
        return self.segments.get(row_key(row), [])


@dataclass(frozen=True)
class Plan:
    """Which found files keep their previous row, and which rows of unfound files stay."""

    found: list[Found]
    reused: dict[int, Row]
    kept: list[Row]
    dropped: int

    @property
    def todo(self) -> list[Found]:
        return [found for index, found in enumerate(self.found) if index not in self.reused]


def plan_run(
    discovery: Discovery,
    previous: Previous,
    *,
    sha: str,
    settings: str,
    keep_removed: bool,
    with_segments: bool,
    cached: Callable[[Key], bool] | None = None,
) -> Plan:
    """Match what was found against what earlier runs left.

    ``cached`` (speaker mode) says whether a row's features are in the feature cache: a row
    without them is scored again, since its speaker's other rows need them.
    """
    reused = {}
    for index, found in enumerate(discovery.found):
        key = found_key(found, sha, settings)
        row = previous.rows.get(key[0])
        if row is None or row.get("status") not in ("ok", "no_speech"):
            continue  # new, or an error row: retried
        has_segments = key in previous.segments or row.get("status") == "no_speech"
        features_kept = cached is None or row.get("status") != "ok" or cached(key)
        if row_key(row) == key and (not with_segments or has_segments) and features_kept:
            reused[index] = row
    present = {path_cell(found.path) for found in discovery.found}
    silent = [path_cell(empty.path) for empty in discovery.empty_inputs]
    silent += [path_cell(folder) for folder in discovery.unreadable]  # not gone: unreadable now
    kept, dropped = [], 0
    for path, row in previous.rows.items():
        if path in present:
            continue
        if keep_removed or any(_under(path, folder) for folder in silent):
            kept.append(row)
        else:
            dropped += 1
    return Plan(discovery.found, reused, kept, dropped)


def check_shrink(plan: Plan, previous: Previous, report: Path, *, allowed: bool) -> None:
    """Refuse a run that would drop more than :data:`SHRINK_LIMIT` of the report's rows."""
    total = len(previous.rows)
    if allowed or plan.dropped <= SHRINK_LIMIT * total:
        return
    raise ShrinkRefused(
        f"this run would drop {plan.dropped} of the {total} rows of {report} (their files are "
        f"no longer found); refusing to drop more than {SHRINK_LIMIT:.0%}: check that every "
        "input is listed and mounted, or pass --allow-shrink (or --keep-removed)"
    )


def _under(path: str, folder: str) -> bool:
    """Whether report path ``path`` is ``folder`` or lies below it (both in report form)."""
    if folder == ".":
        return not path.startswith("/")
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _read(path: Path, fmt: str) -> list[Row]:
    try:
        return read_report(path, fmt)
    except (OSError, ValueError, csv.Error) as error:
        raise UsageError(
            f"cannot read the previous {path} ({' '.join(str(error).split())[:200]}); move it "
            "away or run without --incremental"
        ) from None
