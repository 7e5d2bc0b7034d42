"""Typed reports: numbers, integers and nulls in JSON lines and Parquet, read back either way."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ser.batch.cli import EXIT_FILES_FAILED, main
from ser.batch.report import read_report

from synth import write_voiced

FLOATS = ("duration_s", "confidence")
INTEGERS = ("size_bytes", "mtime_ns")


def _score(*args: str):
    return CliRunner().invoke(main, ["score", *args])


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    """A clip of three 4 s windows and a file that is not audio (an error row)."""
    write_voiced(tmp_path / "audio" / "a.wav", 10.0)
    (tmp_path / "audio" / "bad.wav").write_bytes(b"not audio")
    return tmp_path / "audio"


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {Path(row["path"]).name: row for row in rows}


def test_jsonl_and_parquet_hold_numbers_integers_and_nulls_with_csv_values(audio, tmp_path):
    for name in ("r.csv", "r.jsonl", "r.parquet"):
        assert _score(str(audio), "-o", str(tmp_path / name)).exit_code == EXIT_FILES_FAILED
    lines = _by_name(_jsonl(tmp_path / "r.jsonl"))
    table = pq.read_table(tmp_path / "r.parquet")
    probabilities = [c for c in table.column_names if c.startswith("p_")]
    assert len(probabilities) == 8
    for column in (*FLOATS, *probabilities):
        assert table.schema.field(column).type == pa.float64(), column
    for column in INTEGERS:
        assert table.schema.field(column).type == pa.int64(), column
    for column in ("path", "label", "model", "status", "error", "model_sha256", "settings"):
        assert table.schema.field(column).type == pa.string(), column
    parquet = _by_name(table.to_pylist())
    csv = _by_name(read_report(tmp_path / "r.csv", "csv"))
    good = tmp_path / "audio" / "a.wav"
    for typed in (lines, parquet):
        ok, bad = typed["a.wav"], typed["bad.wav"]
        assert ok["size_bytes"] == good.stat().st_size and type(ok["size_bytes"]) is int
        assert ok["mtime_ns"] == good.stat().st_mtime_ns and type(ok["mtime_ns"]) is int
        assert ok["duration_s"] == 10.0 and ok["error"] is None
        for column in (*FLOATS, *probabilities):  # the CSV's value, rounded the same way
            assert type(ok[column]) is float and ok[column] == float(csv["a.wav"][column])
        assert bad["status"] == "error" and isinstance(bad["error"], str) and bad["error"]
        assert all(bad[c] is None for c in ("label", "confidence", *probabilities))
    assert read_report(tmp_path / "r.jsonl", "jsonl") == read_report(tmp_path / "r.csv", "csv")
    assert read_report(tmp_path / "r.parquet", "parquet") == read_report(tmp_path / "r.csv", "csv")
    summary = CliRunner().invoke(main, ["summarize", str(tmp_path / "r.jsonl")])
    assert summary.exit_code == 0 and "files: 1 ok, 1 failed" in summary.output, summary.output


def _rewrite_as_text(path: Path, fmt: str) -> None:
    """Rewrite a report as earlier versions wrote it: every value the CSV's text, empty for none."""
    rows = read_report(path, fmt)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    first = _jsonl(path)[0] if fmt == "jsonl" else pq.read_table(path).to_pylist()[0]
    assert all(isinstance(value, str) for value in first.values())


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_old_all_text_report_is_reused_by_incremental_and_rewritten_typed(audio, tmp_path, fmt):
    write_voiced(audio / "b.wav", 5.0, f0=300)
    report = tmp_path / f"r.{fmt}"
    assert _score(str(audio), "-o", str(report)).exit_code == EXIT_FILES_FAILED
    typed_rows = read_report(report, fmt)
    old = pq.read_table(report).to_pylist() if fmt == "parquet" else _jsonl(report)
    _rewrite_as_text(report, fmt)
    assert read_report(report, fmt) == typed_rows  # text and typed read the same
    result = _score(str(audio), "-o", str(report), "--incremental")
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    assert "2 unchanged files kept" in result.output  # a.wav and b.wav
    new = pq.read_table(report).to_pylist() if fmt == "parquet" else _jsonl(report)
    assert new == old and type(new[0]["confidence"]) is float  # typed again, value for value
