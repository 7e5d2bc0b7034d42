"""The public API (ser.load_model, ser.batch.api): the CLI's probabilities, rows, keys, records."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import ser
from ser.audio import prepare_signal
from ser.batch.api import (
    Found,
    found_key,
    from_record,
    plan_batches,
    row_key,
    to_record,
    write_provenance,
)
from ser.batch.cli import main
from ser.batch.report import read_report
from ser.batch.scoring import Prepared
from ser.errors import AudioError

from synth import class_signal, voiced


@pytest.fixture(scope="module")
def model():
    return ser.load_model("whisper-pooled", sessions=2)


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    """Mono and stereo clips at 16 and 44.1 kHz, one of several windows, and a broken file."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "a.wav", class_signal(2, 1.5, seed=1), 16_000)
    stereo = np.stack([voiced(220, 2.0, 44_100), voiced(230, 2.0, 44_100, seed=3)], axis=1)
    sf.write(audio / "b.wav", stereo, 44_100)
    sf.write(audio / "c.flac", class_signal(6, 9.0, seed=2), 16_000)
    (audio / "d.wav").write_bytes(b"not audio")
    return sorted(audio.iterdir())


def _probs(row: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key.startswith("p_")}


def test_import_ser_is_light_and_the_api_never_imports_torch(tmp_path):
    code = (
        "import sys, ser; heavy = {'numpy', 'onnxruntime', 'torch', 'ray'}; "
        "light = sorted(heavy & set(sys.modules)); ser.load_model; "
        "print(light, 'torch' in sys.modules, 'ray' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )  # cwd outside the checkout: import the installed ser, as a user does
    assert result.stdout.split() == ["[]", "False", "False"]


def test_files_and_signals_get_the_probabilities_of_the_cli_report(model, clips, tmp_path):
    report = tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["score", *map(str, clips), "-o", str(report)])
    assert result.exit_code == 3, result.output  # d.wav is not audio
    rows = read_report(report, "csv")
    results = list(model.score_files(clips, workers=1))
    assert [r.path for r in results] == clips
    assert [r.row() for r in results] == rows  # cell for cell
    assert not results[3].ok and results[3].prediction is None and results[3].error
    # The three files share one batch in the report (5 windows, batch size 16): so do the signals.
    signals = [sf.read(path, dtype="float32") for path in clips[:3]]
    at_16k = [signals[0][0], prepare_signal(*signals[1]), signals[2][0]]
    predictions = model.predict(at_16k, 16_000)
    for prediction, result, row in zip(predictions, results, rows, strict=False):
        cells = {f"p_{label}": f"{p:.4f}" for label, p in prediction.probs.items()}
        assert cells == _probs(row) and prediction.label == row["label"]
        assert prediction.probs == result.prediction.probs
    [alone] = model.score_files(clips[1:2])
    assert model.predict(*signals[1]).probs == alone.prediction.probs  # any rate, any channels
    windows = results[2].segment_rows()
    assert [(w["start_s"], w["end_s"]) for w in windows] == [
        ("0.000", "4.000"), ("4.000", "8.000"), ("8.000", "9.000")
    ]  # fmt: skip


def test_bad_signals_raise_one_line_errors(model):
    with pytest.raises(AudioError, match="too short"):
        model.predict(np.zeros(100, np.float32), 16_000)
    with pytest.raises(AudioError, match="NaN"):
        model.predict(np.full(16_000, np.nan, np.float32), 16_000)


def test_plan_batches_groups_files_as_the_cli_does(model, clips):
    prepared = [model.prepare(Found.of(path)) for path in clips]
    windows = [0 if p.inputs is None else len(p.inputs.rows) for p in prepared]
    assert windows == [1, 1, 3, 0]
    groups = list(plan_batches(prepared, batch_size=2))
    assert [[p.found.path.name for p in group] for group in groups] == [
        ["a.wav", "b.wav"], ["c.flac"], ["d.wav"]
    ]  # fmt: skip
    streamed = Prepared(Found(Path("long.wav")), stream=lambda: iter(()))
    groups = list(plan_batches([prepared[0], streamed, prepared[1]], batch_size=16))
    assert [len(group) for group in groups] == [1, 1, 1] and groups[1] == [streamed]


@pytest.mark.parametrize("segmentation", ["windows", "vad"])
def test_a_record_round_trips_through_pickle_and_arrow_and_scores_the_same(
    model, clips, segmentation
):
    import pyarrow as pa

    model = model if segmentation == "windows" else ser.load_model("forest", segmentation="vad")
    prepared = [model.prepare(Found.of(path)) for path in clips]
    records = [to_record(p) for p in prepared]
    assert json.dumps({k: v for k, v in records[3].items() if k not in ("rows",)}, default=str)
    through_arrow = pa.Table.from_pylist(records).to_pylist()  # as they are: no conversion
    direct = [result.row() for result in model.score(prepared)]
    for shipped in (pickle.loads(pickle.dumps(records)), through_arrow):
        back = [from_record(record) for record in shipped]
        assert [p.found.path for p in back] == clips
        assert [result.row() for result in model.score(back)] == direct
    with pytest.raises(ValueError, match="streamed file has no record"):
        to_record(Prepared(Found(Path("long.wav")), stream=lambda: iter(())))


def test_a_files_key_is_its_rows_key_and_changes_with_the_file(model, clips, tmp_path):
    [result] = model.score_files(clips[:1])
    found = Found.of(clips[0])
    settings = result.row()["settings"]
    assert found_key(found, model.sha256, settings) == row_key(result.row())
    assert found_key(found, model.sha256, "window=1 hop=1") != row_key(result.row())
    sf.write(clips[0], class_signal(2, 2.5, seed=1), 16_000)
    assert found_key(Found.of(clips[0]), model.sha256, settings) != row_key(result.row())
    path = write_provenance(
        tmp_path / "r.csv", model.pool, settings=settings, started="2026-01-01T00:00:00+0000",
        rows=[next(model.score_files(clips[3:])).row()], options={"batch_size": 16},
        engine={"engine": "mine", "workers": 3},
    )  # fmt: skip
    info = json.loads(path.read_text())
    assert info["engine"] == {"engine": "mine", "workers": 3} and info["failed"] == 1


def test_bad_arguments_raise_at_once_and_failures_are_never_none(model, clips, tmp_path):
    with pytest.raises(TypeError, match="not one path"):
        list(model.score_files(str(clips[0])))  # a string is not a list of one-letter paths
    with pytest.raises(ValueError, match="batch_size"):
        list(model.score_files(clips[:1], batch_size=0))
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(np.zeros(16_000, np.float32), 16_000, batch_size=0)
    for kwargs in (dict(sessions=-1), dict(threads=0), dict(hop=0.0)):
        with pytest.raises(ValueError):
            ser.load_model("forest", **kwargs)

    class Failing:  # refuses its own answer, as the sessions do for a foreign graph's shape
        labels, name, metadata = model.labels, "failing", model.metadata

        def predict(self, inputs):
            raise ser.errors.ModelError("failing.onnx returned probabilities of shape (1, 88)")

    failing = ser.batch.api.Model.__new__(ser.batch.api.Model)
    failing.__dict__.update(model.__dict__, _pool=Failing())
    with pytest.raises(ser.errors.ModelError):
        failing.predict(0.1 * np.sin(np.arange(16_000, dtype=np.float32) / 5), 16_000)


def test_an_unreachable_store_is_an_error_result_and_provenance_takes_a_model(
    model, clips, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    pytest.importorskip("pyarrow.fs")
    results = list(model.score_files([clips[0], "s3://bucket/a.wav", clips[1]]))
    assert [result.ok for result in results] == [True, False, True]
    assert "s3://bucket/a.wav" in results[1].error or "cannot" in results[1].error
    assert model.settings == results[0].row()["settings"] and model.provider
    report = tmp_path / "own.csv"
    written = write_provenance(report, model, settings=model.settings, started="now",
                               rows=[r.row() for r in results], options={}, engine={})  # fmt: skip
    assert json.loads(Path(written).read_text())["model"] == str(model.path)
