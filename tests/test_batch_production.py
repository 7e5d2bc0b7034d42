"""ser-batch as cron runs it: hostile inputs, incremental runs, crashes, locks, formats."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch.cli import EXIT_FILES_FAILED, EXIT_LOCKED, main
from ser.batch.journal import journal_path
from ser.batch.progress import Progress
from ser.batch.report import path_from_cell, read_report
from ser.batch.run import provenance_path
from ser.batch.runlock import lock_path, run_lock

from synth import voiced
from synth import write_voiced as _write


def _score(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["score", *args], input=stdin)


def _rows(path: Path) -> list[dict[str, str]]:
    return read_report(path, "csv")


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, set[str]]:
    """A corpus of every kind of bad input, and the names that must each get one row."""
    root = tmp_path / "hostile"
    root.mkdir()
    (root / "empty.wav").write_bytes(b"")
    good = _write(root / "good.wav")
    (root / "truncated.wav").write_bytes(good.read_bytes()[:30])
    (root / "random.wav").write_bytes(np.random.default_rng(0).bytes(5000))
    sf.write(root / "silence.wav", np.zeros(16_000, np.float32), 16_000)
    nan = voiced(200, 0.5)
    nan[100], nan[200] = np.nan, np.inf
    sf.write(root / "nan.wav", nan, 16_000, subtype="FLOAT")
    sf.write(root / "8ch-96k.wav", np.tile(voiced(200, 0.5, 96_000)[:, None], (1, 8)), 96_000)
    sf.write(root / "1ms.wav", voiced(200, 0.001), 16_000)
    _write(root / "with space.wav")
    _write(root / "ünïcödé-情绪.wav")
    _write(root / "new\nline.wav")
    _write(root / "=cmd()+1.wav")
    _write(root / "clip.mp3", format="MP3")
    _write(root / "clip.ogg", format="OGG", subtype="VORBIS")
    _write(root / "clip.flac", 0.7, 44_100 / 4, rate=44_100)
    (root / "x.wav").mkdir()
    _write(root / "x.wav" / "inside.wav")
    os.symlink(root / "loop-a.wav", root / "loop-b.wav")
    os.symlink(root / "loop-b.wav", root / "loop-a.wav")
    os.symlink(root, root / "x.wav" / "back-to-root")  # a directory loop
    names = {p.name for p in root.iterdir() if p.name != "x.wav"} | {"inside.wav"}
    return root, names


def test_hostile_corpus_gets_one_row_per_input_and_no_crash(hostile, tmp_path, monkeypatch):
    root, names = hostile
    monkeypatch.chdir(root)  # relative paths: the report's path cells start with the file names
    result = _score(".", "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    rows = _rows(tmp_path / "r.csv")
    by_name = {}
    for row in rows:
        by_name.setdefault(path_from_cell(row["path"]).name, []).append(row)
    audio_rows = {name: found for name, found in by_name.items() if name in names}
    assert set(audio_rows) == names
    assert all(len(found) == 1 for found in audio_rows.values())
    status = {name: found[0]["status"] for name, found in audio_rows.items()}
    assert {n for n, s in status.items() if s == "error"} == {
        "empty.wav", "truncated.wav", "random.wav", "nan.wav", "1ms.wav", "loop-a.wav", "loop-b.wav"
    }  # fmt: skip
    assert "symlink loop" in audio_rows["loop-a.wav"][0]["error"]
    assert len(rows) == len(names)  # the directory loop is walked once: no row of its own
    raw = (tmp_path / "r.csv").read_text(encoding="utf-8")
    assert "\n'=cmd()+1.wav," in raw  # neutralised for spreadsheets


def test_incremental_skips_unchanged_rescores_changed_drops_removed(tmp_path):
    audio = tmp_path / "audio"
    for n in range(4):
        _write(audio / f"f{n}.wav", f0=120 + 40 * n)
    report = tmp_path / "r.csv"
    assert _score(str(audio), "-o", str(report)).exit_code == 0
    first = {r["path"]: r for r in _rows(report)}
    _write(audio / "f1.wav", 2.0, 300)  # changed content, size and time
    (audio / "f2.wav").unlink()
    _write(audio / "f9.wav", f0=250)
    result = _score(str(audio), "-o", str(report), "--incremental")
    assert result.exit_code == 0, result.output
    assert "2 unchanged files kept" in result.output
    second = {r["path"]: r for r in _rows(report)}
    assert sorted(Path(p).name for p in second) == ["f0.wav", "f1.wav", "f3.wav", "f9.wav"]
    assert second[str(audio / "f0.wav")] == first[str(audio / "f0.wav")]
    assert second[str(audio / "f1.wav")]["duration_s"] == "2.000"
    (audio / "f3.wav").unlink()
    result = _score(str(audio), "-o", str(report), "--incremental", "--keep-removed")
    assert "3 unchanged files kept" in result.output
    assert str(audio / "f3.wav") in {r["path"] for r in _rows(report)}


def test_kill_9_mid_run_then_incremental_finishes_with_every_file_once(tmp_path):
    audio = tmp_path / "audio"
    for n in range(60):
        _write(audio / f"f{n:02d}.wav", 1.5, 100 + 3 * n)
    report = tmp_path / "r.csv"
    # The installed console script, run outside the checkout: from the repository root,
    # `python -m ser...` would import the source folder `ser/`, which lacks the stage packages.
    ser_batch = str(Path(sys.executable).with_name("ser-batch"))
    command = [ser_batch, "score", str(audio), "-o", str(report)]
    command += ["--workers", "1", "--batch-size", "1"]
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as sink:
        process = subprocess.Popen(command, stderr=sink, cwd=tmp_path)
    journal = journal_path(report)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 5:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"the run ended before it could be killed: {stderr.read_text()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not report.exists()
    done_before = journal.read_text().count("\n")
    assert 5 <= done_before < 60
    result = _score(str(audio), "-o", str(report), "--incremental")
    assert result.exit_code == 0, result.output
    assert f"{done_before} unchanged files kept" in result.output
    paths = [r["path"] for r in _rows(report)]
    assert sorted(paths) == sorted(str(p) for p in audio.iterdir()) and len(set(paths)) == 60
    assert not journal.exists() and not lock_path(report).with_suffix(".pid").exists()


def test_a_second_run_on_the_same_report_is_refused(tmp_path):
    _write(tmp_path / "a.wav")
    report = tmp_path / "r.csv"
    with run_lock(report):
        result = _score(str(tmp_path / "a.wav"), "-o", str(report))
    assert result.exit_code == EXIT_LOCKED
    assert "another ser-batch run" in result.output and f"pid {os.getpid()}" in result.output
    assert not report.exists()


def test_a_stale_lock_from_a_dead_process_is_taken_over(tmp_path):
    _write(tmp_path / "a.wav")
    report = tmp_path / "r.csv"
    lock_path(report).write_text("")
    lock_path(report).with_suffix(".pid").write_text("999999")
    result = _score(str(tmp_path / "a.wav"), "-o", str(report))
    assert result.exit_code == 0, result.output
    assert len(_rows(report)) == 1


def test_the_old_report_survives_a_failure_at_the_end(tmp_path, monkeypatch):
    _write(tmp_path / "a.wav")
    report = tmp_path / "r.csv"
    report.write_text("the previous report\n")

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ser.files.publish", disk_full)
    result = _score(str(tmp_path / "a.wav"), "-o", str(report))
    assert result.exit_code != 0
    assert report.read_text() == "the previous report\n"
    assert journal_path(report).read_text().count("\n") == 1  # the work is kept for next time


def test_one_and_many_workers_write_identical_reports(tmp_path):
    for n in range(12):
        _write(tmp_path / "audio" / f"f{n}.wav", 0.5 + 0.1 * n, 110 + 20 * n)
    (tmp_path / "audio" / "bad.wav").write_bytes(b"nope")
    for workers in ("1", "4"):
        _score(
            str(tmp_path / "audio"), "-o", str(tmp_path / f"r{workers}.csv"), "--workers", workers
        )
    assert (tmp_path / "r1.csv").read_text() == (tmp_path / "r4.csv").read_text()


def test_formats_provenance_and_summary(tmp_path):
    _write(tmp_path / "audio" / "a.wav")
    _write(tmp_path / "audio" / "b.wav", f0=300)
    for name in ("r.jsonl", "r.parquet"):
        assert _score(str(tmp_path / "audio"), "-o", str(tmp_path / name)).exit_code == 0
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["ok", "ok"]
    provenance = json.loads(provenance_path(tmp_path / "r.jsonl").read_text())
    assert provenance["execution_provider"] == "CPUExecutionProvider"
    assert len(provenance["model_sha256"]) == 64 and provenance["files"] == 2
    result = CliRunner().invoke(
        main, ["summarize", str(tmp_path / "r.parquet"), "--plot", str(tmp_path / "s.png")]
    )
    assert result.exit_code == 0, result.output
    assert "files: 2 ok, 0 failed" in result.output and (tmp_path / "s.png").stat().st_size > 0


def test_files_from_stdin_include_and_exclude(tmp_path):
    for name in ("keep/a.wav", "keep/b.flac", "skip/c.wav", "keep/notes.txt"):
        _write(tmp_path / name) if not name.endswith(".txt") else (tmp_path / name).write_text("x")
    result = _score("-o", "-", "--files-from", "-", "--exclude", "skip",
                    stdin=f"{tmp_path / 'keep'}\n{tmp_path / 'skip'}\n\n")  # fmt: skip
    names = [Path(r["path"]).name for r in csv.DictReader(io.StringIO(result.stdout))]
    assert names == ["a.wav", "b.flac"]
    result = _score(str(tmp_path), "-o", "-", "--include", "*.flac")
    assert [Path(r["path"]).name for r in csv.DictReader(io.StringIO(result.stdout))] == ["b.flac"]
    assert _score("-o", "-").exit_code == 2


def test_progress_logs_plain_lines_when_not_on_a_terminal():
    stream = io.StringIO()
    progress = Progress(3, stream=stream, interval_s=0)
    progress.update(True, 2.0)
    progress.update(False, 0.0)
    summary = progress.close()
    assert "2/3 files" in stream.getvalue() and "1 failed" in stream.getvalue()
    assert summary.startswith("1 ok, 1 failed")
