"""ser-export ensemble: exported models as one graph on one encoder pass, on tiny encoders."""

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from ser.corpus import load_corpus, select
from ser.errors import ModelError
from ser.export.cli import main as export_main
from ser.export.ensemble import export_ensemble, share_encoder
from ser.export.neural import export_neural, parity_inputs
from ser.metadata import ModelMetadata
from ser.training.neural import NeuralConfig, train_neural

QUICK = NeuralConfig(window_s=1.0, views=1, epochs=2, augment=False, head="pooled")


@pytest.fixture(scope="module")
def members(synthetic_manifest, tiny_whisper, tmp_path_factory):
    """Two exports of heads on one tiny Whisper (seeds 0 and 5); the second with its encoder's
    matrix weights rounded, as an int8-rounded file's are."""
    root = tmp_path_factory.mktemp("ensemble")
    clips = load_corpus(synthetic_manifest)
    paths = []
    for seed in (0, 5):
        config = replace(QUICK, backbone=str(tiny_whisper), seed=seed)
        train_neural(clips, root / f"ck{seed}", root / "cache", config)
        export_neural(root / f"ck{seed}", root / f"m{seed}.onnx")
        paths.append(root / f"m{seed}.onnx")
    model = onnx.load(paths[1])
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.ndim == 2 and min(value.shape) >= 32 and "MatMul" in init.name:
            init.CopyFrom(
                numpy_helper.from_array(np.round(value, 2).astype(value.dtype), init.name)
            )
    onnx.save(model, paths[1])
    return paths


def probs(path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"audio": rows})[0].astype(np.float64)


def test_the_ensemble_runs_one_encoder_and_averages_its_members(
    members, synthetic_manifest, tmp_path
):
    clips = load_corpus(synthetic_manifest)
    out = tmp_path / "ens.onnx"
    exported = export_ensemble(members, out, weights=[3.0, 1.0],
                               validation_clips=select(clips, "validation"))  # fmt: skip
    assert exported.replaced[0] == 0 and exported.replaced[1] > 0
    assert exported.parity <= 1e-5 and exported.invariance.ok
    assert [check.name for check in exported.members] == ["m0.onnx", "m5.onnx"]

    # the reference, computed here: member 1 on member 0's encoder, weighted mean, temperature
    second = onnx.load(members[1])
    assert share_encoder(second, onnx.load(members[0])) == exported.replaced[1]
    onnx.save(second, tmp_path / "shared.onnx")
    rows = parity_inputs([], 16_000)
    mean = (3 * probs(members[0], rows) + probs(tmp_path / "shared.onnx", rows)) / 4
    logits = np.log(mean) / exported.temperature
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert np.abs(probs(out, rows) - expected).max() < 1e-5
    assert not np.allclose(probs(members[1], rows), probs(tmp_path / "shared.onnx", rows))

    merged, first = onnx.load(out), onnx.load(members[0])
    gelus = [sum(node.op_type == "Erf" for node in m.graph.node) for m in (merged, first)]
    assert gelus[0] == gelus[1] > 0  # the encoder's GELUs (heads use ReLU) once, not per member
    meta = ModelMetadata.from_props({p.key: p.value for p in merged.metadata_props})
    assert [m["weight"] for m in meta.extra_json("ensemble")] == [3.0, 1.0]
    assert meta.extra_json("calibration")["temperature"] == pytest.approx(exported.temperature)
    assert "test_metrics" not in meta.extra  # the members' figures are not the ensemble's


def test_the_cli_writes_an_ensemble_and_refuses_what_cannot_be_one(
    members, checkpoints, synthetic_manifest, tmp_path
):
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(
        export_main,
        ["ensemble", *map(str, members), "-o", str(out), "--data", str(synthetic_manifest)],
    )
    assert result.exit_code == 0, result.output
    assert "parity ok" in result.output and "encoder weights replaced" in result.output
    merged = onnx.load(out)
    meta = ModelMetadata.from_props({p.key: p.value for p in merged.metadata_props})
    assert meta.extra_json("test_metrics")["n"] == 24  # the corpus's test clips, for the record

    export_neural(checkpoints["wav2vec2", "pooled"], tmp_path / "w2v.onnx")
    with pytest.raises(ModelError, match="at least two"):
        export_ensemble(members[:1], tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="differ in structure"):
        export_ensemble([members[0], tmp_path / "w2v.onnx"], tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="one positive weight"):
        export_ensemble(members, tmp_path / "x.onnx", weights=[1.0])
    other = onnx.load(members[1])
    for prop in other.metadata_props:
        if prop.key == "labels":
            prop.value = json.dumps(list(reversed(json.loads(prop.value))))
    onnx.save(other, tmp_path / "reversed.onnx")
    with pytest.raises(ModelError, match="same labels"):
        export_ensemble([members[0], tmp_path / "reversed.onnx"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
