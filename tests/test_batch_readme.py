"""README promises of Score, For cron, Reports and Exit status that no other test covers."""

import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from ser.audio import AUDIO_EXTENSIONS, HAS_FFMPEG
from ser.batch.cli import EXIT_FILES_FAILED, main
from ser.batch.discovery import discover
from ser.batch.progress import Progress
from ser.batch.report import read_report
from ser.batch.run import provenance_path

from synth import write_voiced as _write


def _score(*args: str):
    return CliRunner().invoke(main, ["score", *args])


def test_every_listed_extension_is_found_in_any_case_and_exclude_drops_files(tmp_path):
    # as the README lists them: libsndfile's, FFmpeg's always, FFmpeg's with the formats extra
    listed = ".wav .flac .ogg .oga .opus .mp3 .aif .aiff .au .w64 .caf".split()  # noqa: SIM905
    ffmpeg = ".m4a .mp4 .aac .webm .amr .wma .3gp .mov .mkv .mka".split()  # noqa: SIM905
    extra = ".m4b .3g2 .awb .asf .wmv .ac3 .eac3 .dts .mp2 .mpa .ape .tta .wv .avi .flv".split()  # noqa: SIM905
    assert {*listed, *ffmpeg, *(extra if HAS_FFMPEG else ())} == AUDIO_EXTENSIONS
    for n, extension in enumerate(listed):
        (tmp_path / f"f{n:02d}{extension.upper() if n % 2 else extension}").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    assert len(discover([tmp_path])) == len(listed)
    kept = discover([tmp_path], exclude=["*.W64", "f0[0-3]*"])
    assert [f.path.name for f in kept] == [
        "f04.opus", "f05.MP3", "f06.aif", "f07.AIFF", "f08.au", "f10.caf"
    ]  # fmt: skip


def test_a_file_is_the_mean_of_its_windows_weighted_by_the_audio_they_cover(tmp_path):
    _write(tmp_path / "a.wav", 10.0, 180)  # 4 s windows: 0-4, 4-8 and 8-10 (half empty)
    result = _score(str(tmp_path / "a.wav"), "-o", str(tmp_path / "r.csv"),
                    "--segments", str(tmp_path / "s.csv"))  # fmt: skip
    assert result.exit_code == 0, result.output
    windows = read_report(tmp_path / "s.csv", "csv")
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        ("0.000", "4.000"), ("4.000", "8.000"), ("8.000", "10.000")
    ]  # fmt: skip
    [row] = read_report(tmp_path / "r.csv", "csv")
    columns = [c for c in row if c.startswith("p_")]
    probs = np.array([[float(w[c]) for c in columns] for w in windows])
    weighted = (probs * np.array([4.0, 4.0, 2.0])[:, None]).sum(0) / 10.0
    np.testing.assert_allclose([float(row[c]) for c in columns], weighted, atol=2e-4)
    assert not np.allclose(weighted, probs.mean(0), atol=1e-3)  # the weights matter here
    assert sum(float(row[c]) for c in columns) == pytest.approx(1.0, abs=1e-3)


def test_device_auto_and_threads_score_on_this_machine(tmp_path):
    _write(tmp_path / "a.wav")
    result = _score(str(tmp_path / "a.wav"), "-o", "-", "--device", "auto", "--threads", "1")
    assert result.exit_code == 0, result.output


def test_error_rows_are_retried_by_the_next_incremental_run(tmp_path):
    _write(tmp_path / "audio" / "good.wav")
    (tmp_path / "audio" / "bad.wav").write_bytes(b"not audio")
    report = tmp_path / "r.csv"
    assert _score(str(tmp_path / "audio"), "-o", str(report)).exit_code == EXIT_FILES_FAILED
    result = _score(str(tmp_path / "audio"), "-o", str(report), "--incremental")
    assert result.exit_code == EXIT_FILES_FAILED
    assert "0 ok, 1 failed" in result.output and "1 unchanged files kept" in result.output


def test_provenance_names_model_runtime_versions_times_and_counts(tmp_path):
    _write(tmp_path / "audio" / "a.wav")
    (tmp_path / "audio" / "bad.wav").write_bytes(b"not audio")
    report = tmp_path / "r.csv"
    _score(str(tmp_path / "audio"), "-o", str(report), "--hop", "2")
    info = json.loads(provenance_path(report).read_text())
    assert info["model"].endswith("whisper-pooled.onnx") and len(info["model_sha256"]) == 64
    assert info["settings"] == "window=64000 hop=32000"
    assert info["started"] <= info["finished"] and (info["files"], info["failed"]) == (2, 1)
    assert {"ser", "python", "onnxruntime", "numpy", "soundfile", "soxr"} <= set(info["versions"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_rate_and_eta_and_the_summary_says_it_all():
    stream = _Terminal()
    progress = Progress(4, stream=stream)
    progress.update(True, 3600.0)
    progress.update(False, 0.0)
    summary = progress.close()
    assert "scoring" in stream.getvalue() and "file/s" in stream.getvalue()
    assert "<" in stream.getvalue()  # tqdm's elapsed<remaining
    assert summary.startswith("1 ok, 1 failed, 1.00 h audio in ") and "x real time" in summary


@pytest.mark.parametrize(
    ("output", "fmt", "expected"),
    [("r", None, "csv"), ("R.NDJSON", None, "jsonl"), ("r.txt", "jsonl", "jsonl"),
     ("r.csv", "parquet", "parquet")],
)  # fmt: skip
def test_format_comes_from_the_option_else_the_extension_else_csv(tmp_path, output, fmt, expected):
    _write(tmp_path / "a.wav")
    args = [str(tmp_path / "a.wav"), "-o", str(tmp_path / output)]
    assert _score(*args, *(["--format", fmt] if fmt else [])).exit_code == 0
    [row] = read_report(tmp_path / output, expected)
    assert row["status"] == "ok"


def test_an_unexpected_crash_is_status_1(tmp_path, monkeypatch):
    def crash(*_args, **_kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("ser.batch.run.discover", crash)
    _write(tmp_path / "a.wav")
    assert _score(str(tmp_path / "a.wav"), "-o", str(tmp_path / "r.csv")).exit_code == 1
