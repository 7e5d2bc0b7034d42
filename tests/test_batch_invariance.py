"""A window's scores must not depend on its batch: the export gate and the scorer's reports."""

import csv

import numpy as np
import onnx
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch.cli import main as batch_main
from ser.export.invariance import (
    InvarianceError,
    batch_invariance,
    require_invariance,
    session_runner,
)
from ser.export.neural import check_invariance, export_neural, parity_inputs
from ser.export.onnx_io import save_model
from ser.export.optimize import quantize_dynamic_int8, quantize_int8, quantize_static_int8

from synth import RAVDESS_16K, class_signal, needs_ravdess


def _row_softmax(rows: np.ndarray) -> np.ndarray:
    logits = np.stack([rows[:, :50].mean(1), rows[:, 50:].std(1)], axis=1) * 10
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_a_row_wise_model_passes_and_a_batch_wide_scale_is_refused():
    rows = np.random.default_rng(0).standard_normal((20, 100)).astype(np.float32)
    assert batch_invariance(_row_softmax, rows).ok

    def batch_scaled(batch: np.ndarray) -> np.ndarray:  # what DynamicQuantizeLinear does
        scale = np.abs(batch).max() / 127
        return _row_softmax(np.round(batch / scale) * scale + 0.01 * scale)

    report = batch_invariance(batch_scaled, rows)
    assert report.n == 64 and report.batch_sizes == (1, 16, 64)
    assert not report.ok and report.max_abs_diff > 1e-5
    with pytest.raises(InvarianceError, match=r"m\.onnx: scores depend on the batch.*max \|dp\|"):
        require_invariance(report, "m.onnx")


def test_dynamic_int8_is_refused_and_exported_int8_passes(checkpoints, tmp_path):
    folder = checkpoints["whisper", "pooled"]
    plain = export_neural(folder, tmp_path / "plain.onnx").model
    windows = parity_inputs([], 16_000)
    dynamic = check_invariance(quantize_dynamic_int8(plain).SerializeToString(), windows)
    assert not dynamic.ok, dynamic
    for quantized in (quantize_int8(plain), quantize_static_int8(plain, windows)):
        report = check_invariance(quantized.SerializeToString(), windows)
        assert report.ok, report
    # the float graph is left as it was: the accuracy gate compares it with the int8 one
    assert not {"MatMulNBits", "MatMulInteger"} & {node.op_type for node in plain.graph.node}
    assert check_invariance(plain.SerializeToString(), windows).ok


def test_the_export_gate_refuses_a_batch_dependent_graph(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr("ser.export.neural.quantize_int8", quantize_dynamic_int8)
    with pytest.raises(InvarianceError, match="scores depend on the batch"):
        export_neural(
            checkpoints["whisper", "pooled"], tmp_path / "dyn.onnx", quantize=True,
            validation_clips=_validation(tmp_path), max_accuracy_drop=1.0,
        )  # fmt: skip
    assert not (tmp_path / "dyn.onnx").exists()


def test_reports_are_identical_for_any_batch_size_and_order(checkpoints, tmp_path):
    exported = export_neural(
        checkpoints["whisper", "pooled"], tmp_path / "int8.onnx", quantize=True,
        validation_clips=_validation(tmp_path), max_accuracy_drop=1.0,
    )  # fmt: skip
    assert exported.invariance.ok
    audio = tmp_path / "audio"
    audio.mkdir()
    for n, seconds in enumerate([0.6, 1.0, 2.7, 0.9, 3.3, 1.2, 0.5, 4.1]):
        level = 0.05 + 0.9 * (n % 3) / 2  # loud and quiet files share batches
        sf.write(audio / f"f{n}.wav", level * class_signal(n % 8, seconds, seed=n), 16_000)
    reports = {}
    for batch in (1, 3, 16, 64):
        out = tmp_path / f"r{batch}.csv"
        result = CliRunner().invoke(
            batch_main,
            ["score", str(audio), "-o", str(out), "--model", str(tmp_path / "int8.onnx"),
             "--batch-size", str(batch), "--hop", "0.5"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        reports[batch] = list(csv.DictReader(out.open()))
    alone = {row["path"]: row for row in reports[1]}
    for batch in (3, 16, 64):
        for row in reports[batch]:
            assert row == alone[row["path"]], (batch, row["path"])
    # one file on its own, as an incremental rescoring of a touched file would see it
    out = tmp_path / "one.csv"
    CliRunner().invoke(
        batch_main,
        ["score", str(audio / "f4.wav"), "-o", str(out), "--model", str(tmp_path / "int8.onnx"),
         "--hop", "0.5"],
    )  # fmt: skip
    assert next(csv.DictReader(out.open())) == alone[str(audio / "f4.wav")]


def test_the_gate_runs_on_any_saved_model(checkpoints, tmp_path):
    plain = export_neural(checkpoints["whisper", "pooled"], tmp_path / "p.onnx").model
    save_model(quantize_dynamic_int8(plain), tmp_path / "dyn.onnx")
    runner = session_runner(str(tmp_path / "dyn.onnx"), "audio", "probs")
    assert not batch_invariance(runner, parity_inputs([], 16_000)).ok
    assert onnx.load(tmp_path / "dyn.onnx").graph.node  # the file itself is a valid graph


@needs_ravdess
@pytest.mark.parametrize("model", ["whisper-pooled", "whisper-gated-rooms"])
def test_the_shipped_neural_models_are_batch_invariant_on_the_ravdess_test_clips(model):
    """The gated model thresholds a score per frame: a rounding that moved with the batch
    would change which frames it pools, so it is checked on real speech too."""
    from ser.audio import center_window, load_audio
    from ser.corpus import read_ravdess, select
    from ser.models import shipped_model_path

    clips = select(read_ravdess(RAVDESS_16K), "test")
    windows = np.stack([center_window(load_audio(clip.path), 64_000) for clip in clips])
    report = check_invariance(shipped_model_path(model).read_bytes(), windows)
    assert report.n == 120 and report.ok, report


def test_the_shipped_forest_scores_each_row_on_its_own():
    from ser.models import shipped_model_path

    path = str(shipped_model_path("forest"))
    features = np.random.default_rng(3).standard_normal((40, 88)).astype(np.float32)
    assert batch_invariance(session_runner(path, "features", "probs"), features).ok


def _validation(tmp_path):
    from ser.corpus import Clip

    folder = tmp_path / "validation"
    folder.mkdir(exist_ok=True)
    clips = []
    for label in range(8):
        path = folder / f"v{label}.wav"
        sf.write(path, class_signal(label, 1.0, seed=100 + label), 16_000)
        clips.append(Clip(path, _LABELS[label], "v", "validation"))
    return clips


_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def test_an_older_dynamic_int8_file_is_requantized_without_its_checkpoint(
    checkpoints, synthetic_manifest, tmp_path
):
    from ser.corpus import load_corpus, select
    from ser.export.cli import main as export_main
    from ser.export.optimize import dequantize_dynamic_int8
    from ser.export.requantize import requantize

    plain = export_neural(checkpoints["wav2vec2", "pooled"], tmp_path / "plain.onnx").model
    save_model(quantize_dynamic_int8(plain), tmp_path / "old.onnx")
    restored = dequantize_dynamic_int8(onnx.load(tmp_path / "old.onnx"))
    kinds = {node.op_type for node in restored.graph.node}
    assert "MatMulInteger" not in kinds and "DynamicQuantizeLinear" not in kinds
    windows = parity_inputs([], 16_000)
    float_probs = session_runner(plain.SerializeToString(), "audio", "probs")(windows)
    restored_probs = session_runner(restored.SerializeToString(), "audio", "probs")(windows)
    assert np.abs(float_probs - restored_probs).max() < 0.02  # only the weights' int8 rounding

    validation = select(load_corpus(synthetic_manifest), "validation")
    for precision, op in (("int8", "MatMulNBits"), ("float32", "MatMul")):
        out = tmp_path / f"new-{precision}.onnx"
        result = requantize(
            tmp_path / "old.onnx", out, validation_clips=validation, precision=precision,
            max_accuracy_drop=1.0,
        )  # fmt: skip
        assert result.invariance.ok and out.is_file()
        graph = onnx.load(out)
        assert any(node.op_type == op for node in graph.graph.node)
        assert (
            f"validation_accuracy_{precision}"
            in {p.key: p.value for p in graph.metadata_props}["quantization"]
        )
    refused = CliRunner().invoke(
        export_main,
        ["requantize", str(tmp_path / "plain.onnx"), "-o", str(tmp_path / "x.onnx"),
         "--data", str(synthetic_manifest)],
    )  # fmt: skip
    assert refused.exit_code != 0 and "nothing to redo" in refused.output
    assert not (tmp_path / "x.onnx").exists()
