"""Report rows and formats (CSV, JSON lines, Parquet): safe cells, typed values, atomic replacement.

A row is built as text cells, rounded once (:func:`cell`); CSV writes those cells, JSON lines and
Parquet write them as numbers, integers and nulls (:func:`typed_row`), and every reader turns
either form back into the same cells (:func:`text_row`), so an ``--incremental`` key compares
equal whichever form the previous report has.

A path is written as its UTF-8 text when it is valid UTF-8 without control characters; other
bytes are escaped reversibly (:func:`path_cell`, :func:`path_from_cell`), so every file name the
OS allows round-trips through every format and an ``--incremental`` run recognises its row.
"""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Literal

from ser.batch.scoring import FileScore, Segment
from ser.errors import SerError
from ser.files import atomic_write


class UsageError(SerError):
    """An output that cannot be written as asked."""


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
KEY_COLUMNS = ("size_bytes", "mtime_ns", "model_sha256", "settings")
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, lone surrogates (bytes
# that are not UTF-8, as os.fsdecode keeps them) and the escape character itself.
_NEEDS_ESCAPE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-f]{2})")
SECONDS_DECIMALS = 3
"""Decimals of ``duration_s``, ``speech_s``, ``start_s`` and ``end_s``, in every format."""
PROBABILITY_DECIMALS = 4
"""Decimals of ``confidence`` and the ``p_*`` columns, in every format."""
INTEGER_COLUMNS = ("size_bytes", "mtime_ns")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
"""The extensions ser writes, and the format each names."""

ColumnType = Literal["float", "int", "string"]
Value = str | int | float | None


SPEAKER_COLUMNS = ("speaker", "speaker_items", "normalisation")
"""Speaker mode's columns: who speaks, how many items their statistics hold, and whether the
row was scored against them (``speaker``, ``partial`` or ``none``)."""


def report_columns(labels: Sequence[str], *, speaker: bool = False) -> list[str]:
    return [
        "path",
        "duration_s",
        "speech_s",
        "label",
        "confidence",
        *(f"p_{label}" for label in labels),
        *(SPEAKER_COLUMNS if speaker else ()),
        "model",
        "status",
        "error",
        *KEY_COLUMNS,
    ]


def segment_columns(labels: Sequence[str], *, speaker: bool = False) -> list[str]:
    """One row per window; the file row's key columns say which version of the file it was."""
    return [
        "path", "start_s", "end_s", "label", "confidence",
        *(f"p_{label}" for label in labels),
        *(("speaker", "normalisation") if speaker else ()), *KEY_COLUMNS,
    ]  # fmt: skip


def report_row(
    score: FileScore,
    labels: Sequence[str],
    model_name: str,
    model_sha256: str = "",
    settings: str = "",
) -> dict[str, str]:
    """One report row; failed files keep their path and carry the reason in ``error``.

    ``status`` is ``ok``, ``no_speech`` (``--segmentation vad`` found no speech: no label, no
    probabilities, ``speech_s`` 0) or ``error``.

    ``settings`` names what else shaped the row (window and hop), so an ``--incremental`` run
    rescores a row made with other settings.
    """
    row = dict.fromkeys(report_columns(labels), "")
    row.update(path=path_cell(score.path), model=escape_text(model_name))
    row.update(status=score.status, settings=settings)
    row["model_sha256"] = model_sha256[:16]
    if score.found.size_bytes is not None:
        row.update(
            size_bytes=cell("size_bytes", score.found.size_bytes),
            mtime_ns=cell("mtime_ns", score.found.mtime_ns),
        )
    if score.duration_s is not None:
        row["duration_s"] = cell("duration_s", score.duration_s)
    if score.speech_s is not None:
        row["speech_s"] = cell("speech_s", score.speech_s)
    if score.probs is not None:
        row.update(probability_cells(score.probs, labels))
    row["error"] = escape_text(score.error)
    return row


def segment_rows(
    score: FileScore, labels: Sequence[str], file_row: dict[str, str]
) -> list[dict[str, str]]:
    """One row per window of a scored file, carrying ``file_row``'s path and key."""
    return window_rows(score.segments, labels, file_row)


def window_rows(
    segments: Sequence[Segment], labels: Sequence[str], file_row: dict[str, str]
) -> list[dict[str, str]]:
    """One row per segment (window or speech region), carrying ``file_row``'s path and key."""
    key = {column: file_row[column] for column in ("path", *KEY_COLUMNS)}
    return [
        {
            **key,
            "start_s": cell("start_s", segment.start_s),
            "end_s": cell("end_s", segment.end_s),
            **probability_cells(segment.probs, labels),
        }
        for segment in segments
    ]


def column_type(column: str) -> ColumnType:
    """A column's type in JSON lines and Parquet (CSV holds the same values as text)."""
    if column_decimals(column) is not None:
        return "float"
    return "int" if column in INTEGER_COLUMNS else "string"


def column_decimals(column: str) -> int | None:
    """The decimals a float column is rounded to (none for other columns)."""
    if column in ("duration_s", "speech_s", "start_s", "end_s"):
        return SECONDS_DECIMALS
    if column == "confidence" or column.startswith("p_"):
        return PROBABILITY_DECIMALS
    return None


def cell(column: str, value: Value) -> str:
    """The text cell of ``value`` in ``column``: the one place numbers are rounded.

    Also what a typed value read back becomes, so that a typed report and an all-text one
    give the same cells (``0.862`` in a probability column is ``"0.8620"``, as CSV holds it).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    decimals = column_decimals(column)
    if decimals is not None and not isinstance(value, bool):
        return f"{float(value):.{decimals}f}"
    if column in INTEGER_COLUMNS and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def typed_value(column: str, text: str) -> Value:
    """The JSON lines and Parquet value of a text cell: a number, an integer, or null if empty."""
    if text == "":
        return None
    kind = column_type(column)
    if kind == "float":
        return float(text)
    return int(text) if kind == "int" else text


def typed_row(row: dict[str, str], columns: Sequence[str]) -> dict[str, Value]:
    """``row``'s cells as JSON lines and Parquet hold them, so data tools need no casting."""
    return {column: typed_value(column, row.get(column, "")) for column in columns}


def text_row(row: dict[str, object]) -> dict[str, str]:
    """A row read back from any format or version as the text cells ser compares and writes.

    Typed values (numbers, null) and the all-text values of older reports both become what
    :func:`report_row` makes, so an ``--incremental`` key compares equal either way.
    """
    return {column: cell(column, value) for column, value in row.items()}


def path_cell(path: Path | str) -> str:
    """The report form of a path: its UTF-8 text, with reversible escapes where needed.

    A byte that is not part of valid UTF-8, and each byte of a control character (C0, DEL, C1,
    U+2028, U+2029), is written ``\\xNN`` (two lower-case hex digits); a backslash is doubled.
    Everything else is written as it is. :func:`path_from_cell` undoes it exactly.
    """
    return escape_text(os.fsencode(path).decode("utf-8", "surrogateescape"))


def path_from_cell(cell: str) -> Path:
    """The path a report cell names (the inverse of :func:`path_cell`)."""
    parts, position = [], 0
    for match in _ESCAPED.finditer(cell):
        parts.append(cell[position : match.start()].encode("utf-8", "surrogateescape"))
        escape = match.group(1)
        parts.append(b"\\" if escape == "\\" else bytes([int(escape[1:], 16)]))
        position = match.end()
    parts.append(cell[position:].encode("utf-8", "surrogateescape"))
    return Path(os.fsdecode(b"".join(parts)))


def escape_text(text: str) -> str:
    """``text`` on one line and encodable in every format, escaped as :func:`path_cell` says."""
    return _NEEDS_ESCAPE.sub(_escape_character, text)


def _escape_character(match: re.Match[str]) -> str:
    character = match.group()
    if character == "\\":
        return "\\\\"
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    return "".join(f"\\x{byte:02x}" for byte in character.encode("utf-8", "surrogatepass"))


def probability_cells(probs, labels: Sequence[str]) -> dict[str, str]:
    best = int(probs.argmax())
    return {
        "label": labels[best],
        "confidence": cell("confidence", probs[best]),
        **{f"p_{label}": cell(f"p_{label}", p) for label, p in zip(labels, probs, strict=True)},
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


def report_format(path: str, explicit: str | None = None, what: str = "report") -> str:
    """``explicit`` if given, else from the extension (:data:`FORMATS`); no extension: csv.

    Raises:
        UsageError: for an extension ser does not write (``.json``, ``.tsv``, ``.xlsx``...),
            rather than a CSV file under a name that says otherwise.
    """
    if explicit:
        return explicit
    suffix = Path(path).suffix
    if not suffix:  # and "-", standard output
        return "csv"
    known = known_format(path)
    if known is None:
        hint = "or give --format" if what == "report" else "it follows its own extension"
        raise UsageError(
            f"{what} {path}: ser writes .csv, .jsonl (or .ndjson) and .parquet files, not "
            f"{suffix}; rename it ({hint})"
        )
    return known


def known_format(path: str | Path) -> str | None:
    """The format ``path``'s extension names, if ser writes it (any case)."""
    return FORMATS.get(Path(path).suffix.lower())


def check_output(path: str, fmt: str, what: str = "report") -> None:
    """Refuse, before any work, an output that cannot be written as asked.

    The folder must exist and take a new file (a probe file is created and removed: this
    catches read-only and pseudo file systems, which permission bits do not show); the name
    must not be a directory or another non-regular file (a symbolic link is replaced, never
    followed).

    Raises:
        UsageError: one line saying what is wrong.
    """
    if path == "-":
        if fmt == "parquet":
            raise UsageError("parquet cannot be written to standard output")
        return
    target = Path(path)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as error:  # e.g. the parent is a file
        raise UsageError(f"cannot write {what} {target} ({error.strerror})") from None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise UsageError(f"cannot write {what} {target}: it is {kind}")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {what} {target}: folder {target.parent} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UsageError(
            f"cannot write {what} {target}: folder {target.parent} takes no new file "
            f"({error.strerror})"
        ) from None


def write_report(
    path: str, rows: Sequence[dict[str, str]], columns: Sequence[str], fmt: str
) -> None:
    """Write all rows; a file is replaced atomically (temporary file, fsync, rename).

    Until the rename the previous report stays intact, whatever happens (a crash, a full disk).
    ``-`` writes CSV or JSON lines to standard output.
    """
    if path == "-":
        check_output(path, fmt)
        _write_text(sys.stdout, rows, columns, fmt)
        sys.stdout.flush()
        return
    if fmt == "parquet":
        arrow = _pyarrow()
        types = {"float": arrow.float64(), "int": arrow.int64(), "string": arrow.string()}
        schema = arrow.schema([(column, types[column_type(column)]) for column in columns])
        table = arrow.Table.from_pylist([typed_row(row, columns) for row in rows], schema=schema)
        with atomic_write(Path(path), binary=True) as handle:
            arrow.parquet.write_table(table, handle)
        return
    with atomic_write(Path(path)) as handle:
        _write_text(handle, rows, columns, fmt)


def read_report(path: Path, fmt: str) -> list[dict[str, str]]:
    """Rows of an earlier report (missing file: no rows), as text cells (:func:`text_row`).

    Typed files and the all-text files of earlier versions read the same; a JSON line that is
    not an object is returned as it is, for the caller to refuse.
    """
    if not path.is_file():
        return []
    if fmt == "parquet":
        return [text_row(row) for row in _pyarrow().parquet.read_table(path).to_pylist()]
    with path.open(newline="", encoding="utf-8") as handle:
        if fmt == "jsonl":
            lines = (json.loads(line) for line in handle if line.strip())
            return [text_row(row) if isinstance(row, dict) else row for row in lines]
        return [{k: restore(v or "") for k, v in row.items()} for row in csv.DictReader(handle)]


def _write_text(handle: IO[str], rows: Sequence[dict[str, str]], columns: Sequence[str], fmt: str):
    if fmt == "jsonl":
        for row in rows:
            handle.write(json.dumps(typed_row(row, columns), ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(handle, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: neutralise(row.get(c, "")) for c in columns})


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "parquet reports need pyarrow: pip install 'ser-toolkit[parquet]'"
        ) from None
    return pyarrow
