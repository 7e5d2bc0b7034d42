"""ser-batch against odd names, special files, planted links, signals, full disks, cron mistakes.

Issue 8, sections 2-5: every test builds its own files in a temporary folder. Subprocess tests
run the installed console script from outside the checkout (see test_batch_production.py).
"""

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.audio import load_audio
from ser.batch.cli import EXIT_FILES_FAILED, EXIT_INPUTS, EXIT_OUTPUT_FAILED, EXIT_USAGE, main
from ser.batch.journal import Journal, journal_path, read_journal
from ser.batch.report import path_cell, path_from_cell, read_report
from ser.batch.runlock import lock_path, pid_path, run_lock
from ser.errors import AudioError

from synth import write_voiced as _write

SER_BATCH = str(Path(sys.executable).with_name("ser-batch"))
VICTIM = b"someone else's file\n"
ODD_NAMES = [
    b"not-utf8-\xff\xfe.wav",
    b"line\nbreak.wav",
    b"carriage\rreturn.wav",
    b"tab\there.wav",
    b"bell\x07.wav",
    b"quote\"comma,semi;'.wav",
    b"=SUM(A1).wav",
    b"+plus.wav",
    b"-minus.wav",
    b"@at.wav",
    b"back\\slash\\x41.wav",
    b"nel\xc2\x85 ls\xe2\x80\xa8.wav",
    "情绪-ünï.wav".encode(),
    b"long-" + b"x" * 240 + b".wav",
]


def _score(*args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["score", *args], input=stdin)


def _rows(path: Path, fmt: str = "csv") -> list[dict[str, str]]:
    return read_report(path, fmt)


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error:")]


def _names(rows) -> dict[str, dict[str, str]]:
    return {path_from_cell(row["path"]).name: row for row in rows}


def _wav_bytes(tmp_path: Path, seconds: float = 0.5) -> bytes:
    return _write(tmp_path / "clip-source.wav.src", seconds, format="WAV").read_bytes()


def _journal_lines(report: Path) -> int:
    return journal_path(report).read_bytes().count(b"\n")


# 2. File names and special files


@pytest.mark.parametrize(
    ("raw", "cell"),
    [
        (b"plain/\xe6\x83\x85 =x.wav", "plain/情 =x.wav"),
        (b"a\nb\tc\rd.wav", "a\\x0ab\\x09c\\x0dd.wav"),
        (b"bad\xff.wav", "bad\\xff.wav"),
        (b"back\\slash\\x41.wav", "back\\\\slash\\\\x41.wav"),
        (b"nel\xc2\x85.wav", "nel\\xc2\\x85.wav"),
    ],
)
def test_path_cells_are_the_documented_reversible_form(raw, cell):
    assert path_cell(os.fsdecode(raw)) == cell
    assert os.fsencode(path_from_cell(cell)) == raw


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_any_file_name_is_scored_and_recognised_by_the_next_incremental_run(tmp_path, fmt):
    audio = os.fsencode(tmp_path / "audio")
    os.mkdir(audio)
    clip = _wav_bytes(tmp_path)
    for name in ODD_NAMES:
        with open(os.path.join(audio, name), "wb") as handle:
            handle.write(clip)
    report = tmp_path / f"r.{fmt}"
    result = _score(os.fsdecode(audio), "-o", str(report))
    assert result.exit_code == 0, result.output
    rows = _rows(report, fmt)
    assert [row["status"] for row in rows] == ["ok"] * len(ODD_NAMES)
    paths = sorted(os.fsencode(path_from_cell(row["path"])) for row in rows)
    assert paths == sorted(os.path.join(audio, name) for name in ODD_NAMES)
    again = _score(os.fsdecode(audio), "-o", str(report), "--incremental")
    assert again.exit_code == 0, again.output
    assert f"{len(ODD_NAMES)} unchanged files kept" in again.output
    assert _rows(report, fmt) == rows


def test_files_from_takes_any_name_a_folder_holds(tmp_path):
    audio = os.fsencode(tmp_path / "audio")
    os.mkdir(audio)
    names = [name for name in ODD_NAMES if b"\n" not in name and b"\r" not in name]
    clip = _wav_bytes(tmp_path)
    for name in names:
        with open(os.path.join(audio, name), "wb") as handle:
            handle.write(clip)
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"".join(os.path.join(audio, name) + b"\n" for name in names))
    result = _score("--files-from", str(listing), "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == 0, result.output
    assert len(_rows(tmp_path / "r.csv")) == len(names)


def test_only_regular_files_are_opened_and_nothing_blocks(tmp_path, monkeypatch):
    audio = tmp_path / "audio"
    _write(audio / "good.wav")
    os.mkfifo(audio / "fifo.wav")
    os.mkfifo(tmp_path / "pipe")  # named on the command line, no audio extension
    os.mkfifo(tmp_path / "outside")
    os.symlink(tmp_path / "outside", audio / "link-to-fifo.wav")
    os.symlink("/dev/zero", audio / "zero.wav")
    monkeypatch.chdir(audio)  # a socket's path must be short
    server = socket.socket(socket.AF_UNIX)
    server.bind("sock.wav")
    report = tmp_path / "r.csv"
    try:
        # A regression would block on the FIFO: the timeout turns that into a failure.
        process = subprocess.run(
            [SER_BATCH, "score", str(audio), str(tmp_path / "pipe"), "-o", str(report)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.close()
    assert process.returncode == EXIT_FILES_FAILED, process.stderr
    rows = _names(_rows(report))
    fifo = "not a regular file (a FIFO)"
    assert {name: row["error"] for name, row in rows.items()} == {
        "good.wav": "", "fifo.wav": fifo, "link-to-fifo.wav": fifo, "pipe": fifo,
        "zero.wav": "not a regular file (a character device)",
        "sock.wav": "not a regular file (a socket)",
    }  # fmt: skip


def test_overlapping_inputs_and_linked_folders_give_each_file_one_row(tmp_path):
    audio = tmp_path / "audio"
    for name in ("a.wav", "b.wav", "sub/c.wav"):
        _write(audio / name)
    os.symlink(audio, tmp_path / "alias")
    os.symlink(audio / "sub", audio / "link1")
    os.symlink(audio / "sub", audio / "link2")  # one folder reached twice: not a loop
    os.symlink(audio, audio / "sub" / "up")  # a real cycle
    os.symlink(audio / "a.wav", audio / "sub" / "same-as-a.wav")
    report = tmp_path / "r.csv"
    inputs = [audio, audio / "a.wav", tmp_path / "alias", audio / "sub", f"{audio}/./"]
    result = _score(*map(str, inputs), "-o", str(report))
    assert result.exit_code == 0, result.output
    rows = _rows(report)
    assert [row["path"] for row in rows] == [
        str(audio / n) for n in ("a.wav", "b.wav", "sub/c.wav")
    ]
    assert all(row["status"] == "ok" for row in rows)


def _lying_flac(path: Path, hours: float) -> None:
    """A one-second FLAC whose STREAMINFO claims ``hours`` of audio."""
    sf.write(path, np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1,
             16_000)  # fmt: skip
    data = bytearray(path.read_bytes())
    fields = int.from_bytes(data[18:26], "big")  # rate, channels, bits, 36-bit total samples
    total = int(hours * 3600 * 16_000)
    data[18:26] = ((fields & ~((1 << 36) - 1)) | total).to_bytes(8, "big")
    path.write_bytes(bytes(data))


def test_absurd_headers_are_refused_before_decoding(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "100hz.wav", np.zeros(4_000, np.float32), 100)  # "40 s" at 100 Hz
    _lying_flac(audio / "lying.flac", hours=5)
    _lying_flac(audio / "cut.flac", hours=150 / 3600)  # 150 s claimed, 200 bytes kept
    (audio / "cut.flac").write_bytes((audio / "cut.flac").read_bytes()[:200])
    assert sf.info(str(audio / "lying.flac")).duration == 5 * 3600  # what the header claims
    _write(audio / "good.wav")
    with pytest.raises(AudioError, match="sample rate of 100 Hz"):
        load_audio(audio / "100hz.wav")
    result = _score(str(audio), "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    rows = _names(_rows(tmp_path / "r.csv"))
    assert rows["100hz.wav"]["error"] == (
        "header declares a sample rate of 100 Hz (under 1000 Hz); refused"
    )
    assert rows["lying.flac"]["error"].startswith("header declares 5.0 h of audio in ")
    assert rows["cut.flac"]["error"] == "header declares 150 s of audio in 0.2 kB; refused"
    assert rows["good.wav"]["status"] == "ok"


# 3. Files ser creates never follow someone else's link


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(VICTIM)
    victim.chmod(0o600)
    return victim


def _untouched(victim: Path) -> bool:
    return victim.read_bytes() == VICTIM and stat.S_IMODE(victim.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "name", [journal_path, lock_path, pid_path], ids=["journal", "lock", "pid"]
)
@pytest.mark.parametrize("link", [os.symlink, os.link], ids=["symlink", "hardlink"])
def test_a_link_planted_beside_the_report_is_refused(tmp_path, name, link):
    _write(tmp_path / "a.wav")
    report = tmp_path / "out" / "r.csv"
    report.parent.mkdir()
    victim = _victim(tmp_path)
    link(victim, name(report))
    result = _score(str(tmp_path / "a.wav"), "-o", str(report), "--incremental")
    assert result.exit_code == EXIT_USAGE, result.output
    [error] = _errors(result.output)
    assert str(name(report)) in error and "ser never writes through one" in error
    assert _untouched(victim) and not report.exists()


def test_temporary_and_final_files_replace_a_link_and_never_write_through_it(tmp_path):
    _write(tmp_path / "a.wav")
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    names = [".r.parquet.tmp", ".r.parquet.provenance.json.tmp", "r.parquet",
             "r.parquet.provenance.json", "s.csv", ".s.csv.tmp"]  # fmt: skip
    for name in names:
        os.symlink(victim, out / name)
    result = _score(str(tmp_path / "a.wav"), "-o", str(out / "r.parquet"),
                    "--segments", str(out / "s.csv"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _untouched(victim)
    assert len(_rows(out / "r.parquet", "parquet")) == 1
    assert not (out / "r.parquet").is_symlink() and not (out / "s.csv").is_symlink()


# 4. Output and signal errors


@pytest.mark.parametrize(
    "case",
    ["directory", "parent is a file", "parent missing", "pseudo file system", "segments folder",
     "missing list", "parquet to stdout"],
)  # fmt: skip
def test_outputs_that_cannot_be_written_fail_in_one_line_before_any_work(
    tmp_path, monkeypatch, case
):
    def no_work(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr("ser.batch.run.make_engine", no_work)
    _write(tmp_path / "a.wav")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file.txt").write_text("x")
    output, extra = str(tmp_path / "r.csv"), []
    if case == "directory":
        output = str(tmp_path / "dir")
    elif case == "parent is a file":
        output = str(tmp_path / "file.txt" / "r.csv")
    elif case == "parent missing":
        output = str(tmp_path / "missing" / "r.csv")
    elif case == "pseudo file system":
        output = "/proc/r.csv"
    elif case == "segments folder":
        extra = ["--segments", str(tmp_path / "missing" / "s.csv")]
    elif case == "missing list":
        extra = ["--files-from", str(tmp_path / "no-such-list.txt")]
    else:
        output, extra = "-", ["--format", "parquet"]
    result = _score(str(tmp_path / "a.wav"), "-o", output, *extra)
    assert result.exit_code == EXIT_USAGE, result.output
    assert len(_errors(result.output)) == 1 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def test_a_full_disk_mid_run_is_one_line_and_the_journal_finishes_the_job(tmp_path):
    audio = tmp_path / "audio"
    for n in range(30):
        _write(audio / f"f{n:02d}.wav", 0.5, 100 + 5 * n)
    report = tmp_path / "r.csv"
    report.write_text("the previous report\n")
    # A file-size limit makes writes fail part-way as a full disk does (EFBIG, not ENOSPC):
    # the journal fills up after a few rows, with its last line cut short.
    limit = "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000)); "
    limit += "os.execv(sys.argv[1], sys.argv[1:])"
    command = [sys.executable, "-c", limit, SER_BATCH, "score", str(audio), "-o", str(report),
               "--incremental", "--workers", "1"]  # fmt: skip
    process = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert process.returncode == EXIT_OUTPUT_FAILED, process.stderr
    [error] = _errors(process.stderr)
    assert "File too large" in error and "Traceback" not in process.stderr
    assert report.read_text() == "the previous report\n"
    kept = _journal_lines(report)
    assert 0 < kept < 30
    result = _score(str(audio), "-o", str(report), "--incremental")
    assert result.exit_code == 0, result.output
    assert f"{kept} unchanged files kept" in result.output
    paths = [row["path"] for row in _rows(report)]
    assert sorted(paths) == sorted(str(path) for path in audio.iterdir())


def test_a_very_deep_tree_has_no_recursion_limit(tmp_path):
    depth = 1_500
    folder = tmp_path / "deep"
    folder.mkdir()
    for _ in range(depth):
        folder = folder / "d"
        folder.mkdir()
    try:  # written by Python: libsndfile itself refuses paths over about 1 kB
        (folder / "bottom.wav").write_bytes(_wav_bytes(tmp_path))
        result = _score(str(tmp_path / "deep"), "-o", str(tmp_path / "r.csv"))
        assert result.exit_code == 0, result.output
        [row] = _rows(tmp_path / "r.csv")
        assert row["path"] == str(folder / "bottom.wav") and row["status"] == "ok"
    finally:  # shutil.rmtree recurses: take the tree down from the bottom
        (folder / "bottom.wav").unlink(missing_ok=True)
        while folder != tmp_path:
            folder.rmdir()
            folder = folder.parent


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_sigint_and_sigterm_stop_cleanly_with_their_status(tmp_path, signum, status):
    audio = tmp_path / "audio"
    for n in range(60):
        _write(audio / f"f{n:02d}.wav", 1.5, 100 + 3 * n)
    report = tmp_path / "r.csv"
    command = [SER_BATCH, "score", str(audio), "-o", str(report), "--workers", "1",
               "--batch-size", "1"]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal_path(report).exists() and _journal_lines(report) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the signal"
    process.send_signal(signum)
    stderr = process.communicate(timeout=60)[1]
    assert process.returncode == status, stderr
    [error] = _errors(stderr)
    assert error.startswith(f"Error: stopped by {signal.Signals(signum).name}")
    assert "Traceback" not in stderr
    assert not pid_path(report).exists() and not report.exists()
    with run_lock(report):  # released
        pass
    kept = _journal_lines(report)
    result = _score(str(audio), "-o", str(report), "--incremental")
    assert result.exit_code == 0 and f"{kept} unchanged files kept" in result.output
    assert len({row["path"] for row in _rows(report)}) == 60


@pytest.mark.parametrize("vanish", ["folder moved", "lock removed"])
def test_the_run_stops_when_its_folder_or_lock_disappears(tmp_path, monkeypatch, vanish):
    for n in range(6):
        _write(tmp_path / "audio" / f"f{n}.wav", f0=120 + 30 * n)
    out = tmp_path / "out"
    out.mkdir()
    report = out / "r.csv"
    append = Journal.append

    def append_then_vanish(journal, row, segments=()):
        append(journal, row, segments)
        if row["path"].endswith("f1.wav"):
            if vanish == "folder moved":
                out.rename(tmp_path / "moved")
            else:
                lock_path(report).unlink()

    monkeypatch.setattr(Journal, "append", append_then_vanish)
    args = [str(tmp_path / "audio"), "-o", str(report), "--batch-size", "1", "--workers", "1"]
    result = _score(*args)
    assert result.exit_code == EXIT_OUTPUT_FAILED, result.output
    [error] = _errors(result.output)
    assert "removed or replaced during the run" in error
    assert not report.exists()
    if vanish == "folder moved":
        assert not out.exists()  # not recreated behind the first run's back
        # rows go on to the moved journal until its next check (twice a second, and at the end)
        assert _journal_lines(tmp_path / "moved" / "r.csv") >= 2


def test_a_folder_moved_after_the_last_row_is_caught_before_anything_is_published(
    tmp_path, monkeypatch
):
    import ser.batch.run as run

    for n in range(3):
        _write(tmp_path / "audio" / f"f{n}.wav", f0=120 + 30 * n)
    out = tmp_path / "out"
    out.mkdir()
    assemble = run._assemble

    def assemble_then_move(*args, **kwargs):
        out.rename(tmp_path / "moved")
        out.mkdir()  # a new folder where the old one was: nothing may be written into it
        return assemble(*args, **kwargs)

    monkeypatch.setattr(run, "_assemble", assemble_then_move)
    result = _score(str(tmp_path / "audio"), "-o", str(out / "r.csv"), "--incremental")
    assert result.exit_code == EXIT_OUTPUT_FAILED, result.output
    assert "removed or replaced during the run" in _errors(result.output)[0]
    assert list(out.iterdir()) == []
    assert _journal_lines(tmp_path / "moved" / "r.csv") == 3  # the next run finishes the job


def test_a_write_that_fails_after_the_report_says_the_report_is_updated(tmp_path, monkeypatch):
    import errno

    import ser.batch.run as run

    _write(tmp_path / "audio" / "a.wav")
    report, segments = tmp_path / "r.csv", tmp_path / "seg.csv"
    write_report = run.write_report

    def full_for_segments(path, *args, **kwargs):
        if str(path) == str(segments):
            raise OSError(errno.ENOSPC, "No space left on device")  # no file name, as os.write
        return write_report(path, *args, **kwargs)

    monkeypatch.setattr(run, "write_report", full_for_segments)
    result = _score(str(tmp_path / "audio"), "-o", str(report), "--segments", str(segments))
    assert result.exit_code == EXIT_OUTPUT_FAILED, result.output
    [error] = _errors(result.output)
    assert f"cannot write {segments} (No space left on device)" in error
    assert f"the report is updated, {segments} is not" in error and "intact" not in error
    assert len(_rows(report)) == 1


def test_a_folder_that_cannot_be_read_is_an_error_row_and_keeps_its_rows(tmp_path, monkeypatch):
    import ser.batch.discovery as discovery

    for name in ("agents/a.wav", "archive/b.wav", "archive/c.wav"):
        _write(tmp_path / "audio" / name)
    report = tmp_path / "r.csv"
    assert _score(str(tmp_path / "audio"), "-o", str(report)).exit_code == 0
    before = {row["path"]: row for row in _rows(report)}
    scandir = os.scandir

    def unreadable_archive(path="."):
        if not isinstance(path, int) and Path(path).name == "archive":  # a permissions slip
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", unreadable_archive)
    result = _score(str(tmp_path / "audio"), "-o", str(report), "--incremental")
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    rows = {row["path"]: row for row in _rows(report)}
    archive = str(tmp_path / "audio" / "archive")
    assert rows.pop(archive)["error"] == "cannot read directory (Permission denied)"
    assert rows == before  # the archive's files are not gone: their rows stay
    monkeypatch.setattr(discovery.os, "scandir", scandir)
    result = _score(str(tmp_path / "audio"), "-o", str(report), "--incremental")
    assert result.exit_code == 0 and "3 unchanged files kept" in result.output


def test_names_too_long_for_the_system_are_errors_not_a_crash(tmp_path):
    long_input = tmp_path / ("x" * 300)
    result = _score(str(long_input), "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == EXIT_INPUTS and "File name too long" in result.output
    assert "Traceback" not in result.output
    _write(tmp_path / "audio" / "a.wav")
    deep = os.open(tmp_path / "audio", os.O_RDONLY)
    try:  # folders below it whose full path passes PATH_MAX (4096): made relative to a descriptor
        for _ in range(20):
            os.mkdir("d" * 250, dir_fd=deep)
            inner = os.open("d" * 250, os.O_RDONLY, dir_fd=deep)
            os.close(deep)
            deep = inner
    finally:
        os.close(deep)
    result = _score(str(tmp_path / "audio"), "-o", str(tmp_path / "r.csv"))
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    statuses = sorted((row["status"], row["error"]) for row in _rows(tmp_path / "r.csv"))
    assert statuses[0] == ("error", "cannot read directory (File name too long)")
    assert statuses[1][0] == "ok"


# 5. Incremental runs


def test_an_input_without_files_is_an_error_and_keeps_its_rows(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for n in range(2):
        _write(first / f"a{n}.wav")
        _write(second / f"b{n}.wav", f0=250)
    report = tmp_path / "r.csv"
    assert _score(str(first), str(second), "-o", str(report)).exit_code == 0
    before = _rows(report)
    for path in second.iterdir():  # moved away: an unmounted share looks the same
        path.rename(tmp_path / path.name)
    unmounted = tmp_path / "unmounted"
    result = _score(str(first), str(second), str(unmounted), "-o", str(report), "--incremental")
    assert result.exit_code == EXIT_INPUTS, result.output
    assert _errors(result.output) == [
        f"Error: {second}: no files to score (no matching audio files in it); "
        "its previous rows are kept",
        f"Error: {unmounted}: no files to score (no such file or directory); "
        "its previous rows are kept",
    ]
    assert _rows(report) == before
    (first / "bad.wav").write_bytes(b"not audio")
    result = _score(str(first), str(second), "-o", "-")
    assert result.exit_code == EXIT_INPUTS  # wins over EXIT_FILES_FAILED
    assert "nothing scored from it" in result.output and ",error," in result.output


def test_dropping_more_than_half_of_the_rows_needs_allow_shrink(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    _write(first / "a.wav")
    for n in range(3):
        _write(second / f"b{n}.wav", f0=250)
    report = tmp_path / "r.csv"
    assert _score(str(first), str(second), "-o", str(report)).exit_code == 0
    before = report.read_bytes()
    result = _score(str(first), "-o", str(report), "--incremental")  # `second` left out
    assert result.exit_code == EXIT_INPUTS, result.output
    [error] = _errors(result.output)
    assert "would drop 3 of the 4 rows" in error and "--allow-shrink" in error
    assert report.read_bytes() == before and not journal_path(report).exists()
    result = _score(str(first), "-o", str(report), "--incremental", "--allow-shrink")
    assert result.exit_code == 0, result.output
    assert [row["path"] for row in _rows(report)] == [str(first / "a.wav")]


def test_a_row_scored_with_other_settings_is_rescored(tmp_path):
    for n in range(2):
        _write(tmp_path / "audio" / f"f{n}.wav", 7.0, 140 + 60 * n)
    report = tmp_path / "r.csv"
    args = [str(tmp_path / "audio"), "-o", str(report), "--incremental"]
    assert _score(*args).exit_code == 0
    assert {row["settings"] for row in _rows(report)} == {"window=64000 hop=64000"}
    result = _score(*args, "--hop", "2")
    assert "0 unchanged files kept" in result.output
    assert {row["settings"] for row in _rows(report)} == {"window=64000 hop=32000"}
    assert "2 unchanged files kept" in _score(*args, "--hop", "2").output
    lines = report.read_text().splitlines()  # a report from before the settings column
    report.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert "0 unchanged files kept" in _score(*args, "--hop", "2").output


def test_incremental_segments_keep_the_windows_of_unchanged_files(tmp_path):
    audio = tmp_path / "audio"
    for n in range(3):
        _write(audio / f"f{n}.wav", 7.0, 140 + 60 * n)
    report, segments = tmp_path / "r.csv", tmp_path / "s.csv"
    args = [str(audio), "-o", str(report), "--segments", str(segments)]
    assert _score(*args).exit_code == 0
    before = _rows(segments)
    assert len(before) == 6  # two 4 s windows per file
    _write(audio / "f1.wav", 7.0, 330)  # changed
    result = _score(*args, "--incremental")
    assert result.exit_code == 0 and "2 unchanged files kept" in result.output
    after = _rows(segments)
    assert [row["path"] for row in after] == [row["path"] for row in before]
    for old, new in zip(before, after, strict=True):
        assert (old == new) is (not old["path"].endswith("f1.wav"))
    other, other_segments = tmp_path / "r2.csv", tmp_path / "s2.csv"
    assert _score(str(audio), "-o", str(other)).exit_code == 0  # no windows kept
    result = _score(str(audio), "-o", str(other), "--segments", str(other_segments),
                    "--incremental")  # fmt: skip
    assert "0 unchanged files kept" in result.output and len(_rows(other_segments)) == 6


def test_a_journal_line_cut_short_is_dropped_before_the_next_append(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, fresh=True)
    journal.append({"path": "a"})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"row": {"path": "b"')  # a crash mid-line
    journal = Journal(path, fresh=False)
    journal.append({"path": "c"})
    journal.close()
    assert [entry.row["path"] for entry in read_journal(path)] == ["a", "c"]


def test_the_journal_writes_each_row_at_once_and_syncs_on_a_clock(tmp_path, monkeypatch):
    """Rows reach the file as they come (a killed process loses none of them); the fsync that
    guards them against a power cut runs on a clock and at close, not once per row."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    path = tmp_path / ".r.csv.partial.jsonl"
    journal = Journal(path, fresh=True)
    for n in range(200):
        journal.append({"path": f"f{n}.wav", "status": "ok"})
        assert len(read_journal(path)) == n + 1  # on disk before the next file is scored
    assert len(synced) <= 1  # 200 appends in well under SYNC_EVERY_S: at most one sync
    journal.close()
    assert synced and len(synced) <= 2


def test_a_model_answering_with_the_wrong_shape_gives_error_rows(tmp_path):
    """A file that is not a ser model for this input (one row of probabilities for a batch)
    fails the batch's files with one clear reason; the run does not crash."""
    import onnx
    from onnx import helper, numpy_helper

    from ser.models import shipped_model_path

    shipped = onnx.load(str(shipped_model_path("whisper-pooled")), load_external_data=False)
    weights = numpy_helper.from_array(np.ones((1, 8), np.float32), "w")
    nodes = [  # ReduceL2 over every axis: one row however many windows come in
        helper.make_node("ReduceL2", ["audio"], ["norm"], keepdims=1),
        helper.make_node("MatMul", ["norm", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    outputs = [output for output in shipped.graph.output if output.name in ("logits", "probs")]
    graph = helper.make_graph(nodes, "wrong", list(shipped.graph.input), outputs, [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = shipped.ir_version
    model.metadata_props.extend(shipped.metadata_props)
    onnx.save(model, tmp_path / "wrong.onnx")
    for n in range(3):
        _write(tmp_path / "audio" / f"f{n}.wav", 1.0)
    report = tmp_path / "r.csv"
    args = [str(tmp_path / "audio"), "-o", str(report), "--model", str(tmp_path / "wrong.onnx")]
    result = _score(*args)
    assert result.exit_code == EXIT_FILES_FAILED, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    rows = _rows(report)
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == "error"
        assert "returned probabilities of shape (1, 8) for 3 inputs" in row["error"], row
