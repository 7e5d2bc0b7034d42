"""The eGeMAPS forest to ONNX through skl2onnx, with its contract in the metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import onnx
import skl2onnx
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType

from ser.errors import ModelError
from ser.export.invariance import (
    InvarianceReport,
    batch_invariance,
    require_invariance,
    session_runner,
)
from ser.export.onnx_io import attach_metadata, save_model
from ser.export.parity import ParityReport, compare_probabilities, require_parity
from ser.metadata import ModelMetadata
from ser.training.forest import MODEL_FILE, TEST_FEATURES_FILE

FOREST_TOLERANCE = 1e-5
INPUT_NAME, PROBS_NAME = "features", "probs"


@dataclass(frozen=True)
class ForestExport:
    """The two gates a written forest passed."""

    parity: ParityReport
    invariance: InvarianceReport


def export_forest(model_dir: Path, out_path: Path) -> ForestExport:
    """Convert, check against scikit-learn on the saved test features, then write ``out_path``.

    Raises:
        ModelError: when ``model_dir`` is not a trained forest.
        ParityError: with the figures, when ONNX Runtime disagrees with scikit-learn.
        InvarianceError: with the figures, when a row's scores depend on its batch.
    """
    forest, config, metrics = _load_trained_forest(model_dir)
    n_features = len(config["feature_names"])
    model = to_onnx(
        forest,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options={id(forest): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    _rename_output(model, "probabilities", PROBS_NAME)
    metadata = ModelMetadata(
        frontend="egemaps",
        labels=tuple(config["labels"]),
        sample_rate=config["sample_rate"],
        input_name=INPUT_NAME,
        probs_name=PROBS_NAME,
        extra={
            "model": "random-forest",
            "feature_set": config["feature_set"],
            "opensmile_version": config["opensmile_version"],
            "feature_names": config["feature_names"],
            "test_metrics": {k: metrics["test"][k] for k in ("n", "accuracy", "uar", "f1")},
            "manifest_hash": config["manifest_hash"],
            "versions": {**config["versions"], "skl2onnx": skl2onnx.__version__},
        },
    )
    attach_metadata(model, metadata)
    onnx.checker.check_model(model)
    gates = _gates(forest, model.SerializeToString(), model_dir, str(out_path))
    save_model(model, out_path)
    return gates


def check_forest(model_path: Path, model_dir: Path) -> ForestExport:
    """Run the export gates again on a written forest: parity with the scikit-learn model in
    ``model_dir`` on every test clip's saved features, and batch invariance.

    Raises:
        ModelError: when ``model_dir`` is not a trained forest or ``model_path`` is unreadable.
        ParityError, InvarianceError: with the figures, as at export.
    """
    forest, _, _ = _load_trained_forest(model_dir)
    try:
        model_bytes = Path(model_path).read_bytes()
    except OSError as error:
        raise ModelError(f"{model_path}: cannot read ({error.strerror})") from None
    return _gates(forest, model_bytes, model_dir, str(model_path))


def _gates(forest: object, model: bytes, model_dir: Path, what: str) -> ForestExport:
    """ONNX Runtime against scikit-learn on the saved test features; the same rows in batches."""
    features = np.load(model_dir / TEST_FEATURES_FILE)["features"].astype(np.float32)
    runner = session_runner(model, INPUT_NAME, PROBS_NAME)
    source = forest.predict_proba(features)
    report = require_parity(compare_probabilities(source, runner(features), FOREST_TOLERANCE), what)
    invariance = require_invariance(batch_invariance(runner, features), what)
    return ForestExport(report, invariance)


def _load_trained_forest(model_dir: Path) -> tuple[object, dict, dict]:
    needed = [
        model_dir / name for name in (MODEL_FILE, TEST_FEATURES_FILE, "config.json", "metrics.json")
    ]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise ModelError(
            f"{model_dir}: not a trained forest (missing {', '.join(missing)}); "
            "run ser-train forest"
        )
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("model") != "forest":
        raise ModelError(f"{model_dir}: holds a {config.get('model')!r} model, not a forest")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    return joblib.load(model_dir / MODEL_FILE), config, metrics


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    """Give the probability output the name every ser model uses."""
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new
