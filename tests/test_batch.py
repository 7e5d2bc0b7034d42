"""ser-batch behaviour that needs no trained model of its own, and the CLIs' help."""

import csv
import io

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser import __version__
from ser.batch.cli import main as batch_main
from ser.batch.discovery import discover
from ser.batch.report import neutralise, read_report, restore, write_report
from ser.batch.session import ScoringModel, execution_providers
from ser.errors import ModelError
from ser.export.cli import main as export_main
from ser.models import DEFAULT_MODEL
from ser.training.cli import main as train_main

from synth import voiced


@pytest.mark.parametrize("command", [train_main, export_main, batch_main])
def test_version(command):
    result = CliRunner().invoke(command, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    ("cell", "safe"),
    [("=cmd|' /C calc'!A0", "'=cmd|' /C calc'!A0"), ("+1", "'+1"), ("-1", "'-1"), ("@x", "'@x"),
     ("\tx", "'\tx"), ("\rx", "'\rx"), ("plain.wav", "plain.wav"), ("", "")],
)  # fmt: skip
def test_formula_cells_are_neutralised(cell, safe):
    assert neutralise(cell) == safe
    assert restore(neutralise(cell)) == cell


def test_report_write_is_atomic_and_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    path.write_text("old\n")
    rows = [{"a": "=1+1", "b": "'quoted"}, {"a": "plain", "b": ""}]

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ser.files.publish", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_report(str(path), rows, ["a", "b"], "csv")
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    write_report(str(path), rows, ["a", "b"], "csv")
    assert path.read_text() == "a,b\n'=1+1,''quoted\nplain,\n"
    assert read_report(path, "csv") == rows
    for fmt in ("jsonl", "parquet"):
        write_report(str(tmp_path / f"r.{fmt}"), rows, ["a", "b"], fmt)
        assert read_report(tmp_path / f"r.{fmt}", fmt) == rows


def test_discovery_is_sorted_recursive_and_reports_missing(tmp_path):
    for name in ["b/z.wav", "b/a.FLAC", "a.mp3", "notes.txt", "c/d/e.ogg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = discover([tmp_path, tmp_path / "notes.txt", tmp_path / "gone.wav"])
    names = [f.path.relative_to(tmp_path).as_posix() for f in found]
    assert names == ["a.mp3", "b/a.FLAC", "b/z.wav", "c/d/e.ogg", "notes.txt"]
    assert not any(f.error for f in found)
    [gone] = found.empty_inputs
    assert (gone.path, gone.reason) == (tmp_path / "gone.wav", "no such file or directory")


@pytest.mark.parametrize(
    "model", ["forest", "whisper-pooled", "whisper-pooled-rooms", "whisper-gated-rooms"]
)
def test_shipped_models_score_to_stdout(tmp_path, model):
    sf.write(tmp_path / "a.wav", voiced(180, 1.5), 16_000)
    args = ["score", str(tmp_path / "a.wav"), "-o", "-", "--model", model]
    result = CliRunner().invoke(batch_main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["model"] == model


def test_the_default_model_is_the_shipped_neural_one():
    assert DEFAULT_MODEL == "whisper-pooled"
    meta = ScoringModel(DEFAULT_MODEL).metadata
    assert meta.frontend == "waveform" and meta.extra_json("test_metrics")["accuracy"] > 0.5


def test_silent_and_tiny_files_become_error_rows_or_scores(tmp_path):
    sf.write(tmp_path / "silence.wav", voiced(100, 1.0) * 0, 16_000)
    sf.write(tmp_path / "tiny.wav", voiced(100, 0.001), 16_000)
    sf.write(tmp_path / "short.wav", voiced(100, 0.05), 16_000)
    args = ["score", str(tmp_path), "-o", str(tmp_path / "r.csv"), "--model", "forest"]
    result = CliRunner().invoke(batch_main, args)
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in csv.DictReader((tmp_path / "r.csv").open())}
    assert rows["silence.wav"]["status"] == "ok"  # silence is a valid, if dull, recording
    assert rows["tiny.wav"]["status"] == "error" and "too short" in rows["tiny.wav"]["error"]
    assert rows["short.wav"]["status"] == "error" and "too short" in rows["short.wav"]["error"]
    assert result.exit_code == 3


@pytest.mark.parametrize("content", [b"", b"this is not an onnx model"])
def test_a_bad_model_file_is_a_one_line_error(tmp_path, content):
    (tmp_path / "m.onnx").write_bytes(content)
    sf.write(tmp_path / "a.wav", voiced(180, 0.5), 16_000)
    result = CliRunner().invoke(
        batch_main,
        ["score", str(tmp_path / "a.wav"), "-o", "-", "--model", str(tmp_path / "m.onnx")],
    )
    assert result.exit_code == 2
    assert "not a loadable ONNX model" in result.output and "Traceback" not in result.output


def test_an_onnx_model_without_ser_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx"
    )
    with pytest.raises(ModelError, match="not a ser model"):
        ScoringModel(str(tmp_path / "m.onnx"))


def test_unknown_model_name():
    with pytest.raises(ModelError, match="not a shipped model"):
        ScoringModel("no-such-model")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA"
)
def test_cuda_asked_for_without_cuda_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(ModelError, match="CUDA execution provider is not available"):
        execution_providers("cuda")
    result = CliRunner().invoke(batch_main, ["score", str(tmp_path), "-o", "-", "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA" in result.output


def test_a_hop_longer_than_the_window_is_refused_in_one_line(tmp_path):
    """Windows would start past the end of short files, and audio between them go unscored."""
    import ser

    sf.write(tmp_path / "a.wav", voiced(180, 6.0), 16_000)
    args = ["score", str(tmp_path / "a.wav"), "-o", str(tmp_path / "r.csv"), "--model",
            "whisper-gated-rooms", "--hop"]  # fmt: skip
    result = CliRunner().invoke(batch_main, [*args, "8"])
    assert result.exit_code == 2 and "must not exceed the model's window (4 s)" in result.output
    assert result.output.strip().count("\n") == 0 and not (tmp_path / "r.csv").exists()
    assert CliRunner().invoke(batch_main, [*args, "4"]).exit_code == 0  # a hop of one window
    with pytest.raises(ValueError, match="must not exceed"):
        ser.load_model("whisper-gated-rooms", hop=4.5)


def test_waveform_windows_match_training_evaluation_and_stream_identically():
    from ser.batch.frontends import WaveformFrontend
    from ser.metadata import ModelMetadata

    meta = ModelMetadata(frontend="waveform", labels=("a", "b"), sample_rate=16_000,
                         input_name="audio", probs_name="probs", window_s=1.0)  # fmt: skip
    frontend = WaveformFrontend(meta, hop_s=0.5)
    clip = voiced(150, 1.3)  # up to 1.5 windows: one centred crop, as training evaluated
    single = frontend.inputs(clip)
    assert single.rows.shape == (1, 16_000) and (single.starts[0], single.ends[0]) == (
        2_400,
        18_400,
    )
    np.testing.assert_array_equal(single.rows[0], clip[2_400:18_400])
    long = voiced(150, 2.2)
    whole = frontend.inputs(long)
    assert whole.starts.tolist() == [0, 8_000, 16_000, 24_000]
    assert whole.ends.tolist() == [16_000, 24_000, 32_000, 35_200]
    for signal in (clip, long):
        blocks = [signal[i : i + 3_000] for i in range(0, signal.size, 3_000)]
        chunks = list(frontend.stream_inputs(blocks, chunk_windows=2))
        expected = frontend.inputs(signal)
        np.testing.assert_array_equal(np.concatenate([c.rows for c in chunks]), expected.rows)
        np.testing.assert_array_equal(np.concatenate([c.starts for c in chunks]), expected.starts)


def test_the_final_summary_says_only_what_happened(tmp_path):
    sf.write(tmp_path / "a.wav", voiced(150.0, 1.0, 16_000, 0.3, 1), 16_000)
    args = ["score", str(tmp_path / "a.wav"), "--model", "forest", "-o", str(tmp_path / "r.csv")]
    plain = CliRunner().invoke(batch_main, args)
    assert plain.exit_code == 0, plain.output
    assert "1 ok, 0 failed" in plain.output and "unchanged" not in plain.output
    again = CliRunner().invoke(batch_main, [*args, "--incremental"])
    assert "no file to score" in again.output and "real time" not in again.output
    assert "1 unchanged files kept" in again.output
