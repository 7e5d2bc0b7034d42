"""ser-batch summarize: what a report says, and one clear line for anything that is not one."""

import csv
import sys
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch.cli import main as batch_main

from synth import class_signal

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, forest_onnx):
    """A real report and its --segments file."""
    folder = tmp_path_factory.mktemp("scored")
    for index in (0, 5):
        sf.write(folder / f"c{index}.wav", class_signal(index, 1.2, seed=70 + index), 16_000)
    report, segments = folder / "report.csv", folder / "segments.csv"
    args = ["score", str(folder), "-o", str(report), "--segments", str(segments),
            "--model", str(forest_onnx)]  # fmt: skip
    assert CliRunner().invoke(batch_main, args).exit_code == 0
    return report, segments


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error:") and result.output.count("\n") == 1, result.output
    return result.output


def test_summarize_refuses_what_is_not_a_report_in_one_line(scored, trained_forest, tmp_path):
    _, segments = scored
    not_parquet = tmp_path / "r.parquet"
    not_parquet.write_bytes(b"PAR1 but not really")
    for path, message in [
        (segments, "a --segments file"),
        (trained_forest.out_dir / "metrics.json", "not a ser-batch report"),
        (ROOT / "pyproject.toml", "not a ser-batch report"),
        (not_parquet, "not a ser-batch report"),
    ]:
        output = _one_line_error(CliRunner().invoke(batch_main, ["summarize", str(path)]))
        assert message in output and str(path) in output


def test_summarize_plot_creates_its_folder(scored, tmp_path):
    report, _ = scored
    picture = tmp_path / "plots" / "deeper" / "summary.png"
    result = CliRunner().invoke(batch_main, ["summarize", str(report), "--plot", str(picture)])
    assert result.exit_code == 0, result.output
    assert "files: 2 ok, 0 failed" in result.output and picture.stat().st_size > 1000
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("plot", "message"),
    [("summary.png", "pip install 'ser-toolkit[plot]'"), ("summary.txt", "name a picture file")],
)
def test_a_plot_that_cannot_be_made_fails_before_any_output(
    scored, tmp_path, monkeypatch, plot, message
):
    report, _ = scored
    if plot.endswith(".png"):
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # the plot extra is not installed
    result = CliRunner().invoke(
        batch_main, ["summarize", str(report), "--plot", str(tmp_path / plot)]
    )
    assert message in _one_line_error(result)
