"""Typed reports: numbers, integers and nulls in JSON lines and Parquet, read back either way."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ser.batch.cli import EXIT_FILES_FAILED, EXIT_USAGE, main
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


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_segments_follow_their_own_extension_and_are_typed(audio, tmp_path, fmt):
    segments = tmp_path / f"s.{fmt}"
    result = _score(
        str(audio / "a.wav"), "-o", str(tmp_path / "r.csv"), "--segments", str(segments)
    )
    assert result.exit_code == 0, result.output
    if fmt == "parquet":
        table = pq.read_table(segments)
        assert table.schema.field("start_s").type == pa.float64()
        assert table.schema.field("mtime_ns").type == pa.int64()
        windows = table.to_pylist()
    else:
        windows = _jsonl(segments)
    assert [(w["start_s"], w["end_s"]) for w in windows] == [(0.0, 4.0), (4.0, 8.0), (8.0, 10.0)]
    assert all(type(w["confidence"]) is float and type(w["size_bytes"]) is int for w in windows)


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
    report, segments = tmp_path / f"r.{fmt}", tmp_path / f"s.{fmt}"
    args = [str(audio), "-o", str(report), "--segments", str(segments)]
    assert _score(*args).exit_code == EXIT_FILES_FAILED
    typed_rows, typed_windows = read_report(report, fmt), read_report(segments, fmt)
    old = [pq.read_table(path).to_pylist() if fmt == "parquet" else _jsonl(path)
           for path in (report, segments)]  # fmt: skip
    for path in (report, segments):
        _rewrite_as_text(path, fmt)
    assert read_report(report, fmt) == typed_rows  # text and typed read the same
    result = _score(*args, "--incremental")
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    assert "2 unchanged files kept" in result.output  # a.wav and b.wav, windows and all
    new = [pq.read_table(path).to_pylist() if fmt == "parquet" else _jsonl(path)
           for path in (report, segments)]  # fmt: skip
    assert new == old  # typed again, value for value
    assert type(new[0][0]["confidence"]) is float and type(new[1][0]["start_s"]) is float
    assert read_report(segments, fmt) == typed_windows


@pytest.mark.parametrize(
    ("report", "segments"),
    [("r.json", None), ("r.tsv", None), ("r.XLSX", None), ("calls.2024-05-01", None),
     ("r.csv", "s.json"), ("r.jsonl", "s.txt")],
)  # fmt: skip
def test_an_extension_ser_does_not_write_is_refused_before_any_work(
    audio, tmp_path, report, segments
):
    out = tmp_path / "out"
    out.mkdir()
    extra = ["--segments", str(out / segments)] if segments else []
    result = _score(str(audio), "-o", str(out / report), *extra)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error:"), result.output
    assert ".csv, .jsonl (or .ndjson) and .parquet" in result.output
    assert str(out / (segments or report)) in result.output
    assert list(out.iterdir()) == []
