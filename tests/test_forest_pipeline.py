"""Train -> export -> score round trip of the eGeMAPS forest on a synthetic corpus."""

import csv
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ser.errors import ModelError
from ser.export.cli import main as export_main
from ser.export.parity import ParityError, compare_probabilities, require_parity
from ser.labels import LABELS
from ser.metadata import ModelMetadata
from ser.training.cli import main as train_main

from synth import RAVDESS_16K, RAVDESS_48K_SAMPLE, class_signal, needs_ravdess


def test_forest_learns_the_synthetic_classes(trained_forest):
    metrics = json.loads((trained_forest.out_dir / "metrics.json").read_text())["test"]
    assert metrics["n"] == 24
    assert metrics["accuracy"] >= 0.75  # chance is 0.125
    assert set(metrics["f1"]) == set(LABELS)
    assert np.asarray(metrics["confusion_matrix"]).sum() == 24
    assert (trained_forest.out_dir / "confusion_matrix.png").stat().st_size > 1000
    assert trained_forest.min_samples_leaf in (5, 10, 50, 100, 150, 200)


def test_second_run_reads_features_from_cache(synthetic_manifest, tmp_path, monkeypatch):
    from ser.corpus import load_corpus
    from ser.features import EgemapsExtractor
    from ser.training.forest import train_forest

    clips = load_corpus(synthetic_manifest)
    train_forest(clips, tmp_path / "a", tmp_path / "cache")

    def fail(*_args, **_kwargs):
        raise AssertionError("features extracted again")

    monkeypatch.setattr(EgemapsExtractor, "extract", fail)
    run = train_forest(clips, tmp_path / "b", tmp_path / "cache")
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert run.metrics["accuracy"] == first["test"]["accuracy"]


def test_exported_forest_carries_its_contract(forest_onnx, trained_forest):
    model = onnx.load(forest_onnx)
    props = {p.key: p.value for p in model.metadata_props}
    meta = ModelMetadata.from_props(props)
    assert meta.frontend == "egemaps" and meta.labels == LABELS and meta.sample_rate == 16_000
    assert len(meta.extra_json("feature_names")) == 88
    assert meta.extra_json("feature_set") == "eGeMAPSv02"
    assert meta.extra_json("test_metrics")["accuracy"] == trained_forest.metrics["accuracy"]
    assert "opensmile_version" in meta.extra and "manifest_hash" in meta.extra
    assert [o.name for o in model.graph.output] == ["label", "probs"]  # no ZipMap


def test_parity_gate_refuses_with_figures():
    source = np.array([[0.7, 0.3], [0.4, 0.6]])
    report = compare_probabilities(source, source + np.array([[0, 0], [0.3, -0.3]]), 1e-5)
    assert report.argmax_mismatches == 1 and report.max_abs_diff == pytest.approx(0.3)
    with pytest.raises(ParityError, match=r"argmax mismatches 1"):
        require_parity(report, "x.onnx")
    tie = compare_probabilities(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5 + 1e-7]]), 1e-5)
    assert tie.ok


def test_cli_train_export_score_round_trip(synthetic_manifest, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model"
    result = runner.invoke(
        train_main,
        [
            "forest",
            "--data",
            str(synthetic_manifest),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test accuracy=" in result.output
    result = runner.invoke(
        export_main, ["forest", "--model", str(out), "-o", str(tmp_path / "f.onnx")]
    )
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output

    import soundfile as sf

    from ser.batch.cli import main as batch_main

    audio = tmp_path / "audio"
    (audio / "sub").mkdir(parents=True)
    sf.write(audio / "low.wav", class_signal(0, 1.2, seed=999), 16_000)
    sf.write(audio / "sub" / "high.flac", class_signal(7, 1.2, seed=998, rate=44_100), 44_100)
    (audio / "broken.wav").write_bytes(b"not audio at all")
    report = tmp_path / "report.csv"
    result = runner.invoke(
        batch_main, ["score", str(audio), "-o", str(report), "--model", str(tmp_path / "f.onnx")]
    )
    assert result.exit_code == 3, result.output  # one file failed
    rows = list(csv.DictReader(report.open()))
    assert [r["path"].split("/")[-1] for r in rows] == ["broken.wav", "low.wav", "high.flac"]
    broken, low, high = rows
    assert broken["status"] == "error" and "cannot decode" in broken["error"]
    assert (low["status"], low["label"], high["label"]) == ("ok", "neutral", "surprised")
    probs = [float(low[f"p_{label}"]) for label in LABELS]
    assert sum(probs) == pytest.approx(1, abs=1e-3)
    assert float(low["confidence"]) == max(probs)
    assert float(high["duration_s"]) == pytest.approx(1.2, abs=0.01)


def test_export_refuses_a_folder_that_is_not_a_forest(tmp_path):
    from ser.export.forest import export_forest

    with pytest.raises(ModelError, match="not a trained forest"):
        export_forest(tmp_path, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@needs_ravdess
def test_forest_on_real_ravdess_subset_exports_with_parity(tmp_path):
    """Real clips: actors 1-4 fit, 23 test; export must pass the parity gate on them."""
    from ser.corpus import read_ravdess
    from ser.export.forest import export_forest
    from ser.training.forest import train_forest

    clips = [c for c in read_ravdess(RAVDESS_16K) if c.speaker in {"actor01", "actor02",
             "actor03", "actor04", "actor23"}]  # fmt: skip
    run = train_forest(clips, tmp_path / "m", tmp_path / "cache")
    assert run.metrics["n"] == 60
    assert run.metrics["accuracy"] > 0.2  # chance is 0.125; four actors are little data
    exported = export_forest(tmp_path / "m", tmp_path / "f.onnx")
    assert exported.parity.ok and exported.parity.n == 60 and exported.parity.max_abs_diff <= 1e-5
    assert exported.invariance.ok and exported.invariance.n >= 64


@needs_ravdess
def test_shipped_default_model_scores_the_48k_originals(tmp_path):
    from ser.batch.cli import main as batch_main

    result = CliRunner().invoke(
        batch_main, ["score", str(RAVDESS_48K_SAMPLE), "-o", str(tmp_path / "r.csv")]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 8 and all(r["status"] == "ok" and r["label"] in LABELS for r in rows)
