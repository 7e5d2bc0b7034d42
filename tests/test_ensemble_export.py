"""ser-export ensemble: exported models as one graph on one encoder pass, on tiny encoders."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

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
from ser.export.onnx_io import read_metadata
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
    meta = read_metadata(merged)
    assert [m["weight"] for m in meta.extra_json("ensemble")] == [3.0, 1.0]
    assert meta.extra_json("calibration")["temperature"] == pytest.approx(exported.temperature)
    assert "test_metrics" not in meta.extra  # the members' figures are not the ensemble's
    written = hashlib.sha256(merged.graph.SerializeToString()).hexdigest()[:16]
    assert meta.extra["graph_sha256"] == written  # the merged graph's, not the first member's


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
    meta = read_metadata(merged)
    assert meta.extra_json("test_metrics")["n"] == 24  # the corpus's test clips, for the record

    export_neural(checkpoints["wav2vec2", "pooled"], tmp_path / "w2v.onnx")
    with pytest.raises(ModelError, match="at least two"):
        export_ensemble(members[:1], tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="differ in structure"):
        export_ensemble([members[0], tmp_path / "w2v.onnx"], tmp_path / "x.onnx")
    with pytest.raises(ModelError, match="one positive, finite weight"):
        export_ensemble(members, tmp_path / "x.onnx", weights=[1.0])
    other = onnx.load(members[1])
    for prop in other.metadata_props:
        if prop.key == "labels":
            prop.value = json.dumps(list(reversed(json.loads(prop.value))))
    onnx.save(other, tmp_path / "reversed.onnx")
    with pytest.raises(ModelError, match="same labels"):
        export_ensemble([members[0], tmp_path / "reversed.onnx"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("weights", [[float("nan"), 1.0], [float("inf"), 1.0], [1e308, 1e308]])
def test_weights_that_are_not_finite_are_refused_before_any_work(members, tmp_path, weights):
    with pytest.raises(ModelError, match="finite weight"):
        export_ensemble(members, tmp_path / "x.onnx", weights=weights)
    assert not (tmp_path / "x.onnx").exists()


def test_bad_outputs_and_a_member_given_twice_are_one_line_before_any_work(members, tmp_path):
    before = members[1].read_bytes()
    cases = [
        ([members[0], members[1]], members[1], "overwrite one of the models"),
        ([members[0], members[0].parent / "." / members[0].name], tmp_path / "x.onnx", "twice"),
        (members, tmp_path, "is a directory"),
        (members, members[0] / "x.onnx", "cannot write"),  # a parent that is a file
    ]
    for paths, output, message in cases:
        result = CliRunner().invoke(export_main, ["ensemble", *map(str, paths), "-o", str(output)])
        assert result.exit_code != 0 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert members[1].read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_the_invariance_gate_runs_whole_batches_and_test_metrics_need_test_clips(
    members, synthetic_manifest, tmp_path, monkeypatch
):
    sizes = []
    original = ort.InferenceSession.run

    def counting(self, outputs, feeds, *args, **kwargs):
        sizes.append(len(next(iter(feeds.values()))))
        return original(self, outputs, feeds, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counting)
    clips = load_corpus(synthetic_manifest)
    not_test = [clip for clip in clips if clip.split != "test"]
    export_ensemble(members, tmp_path / "e.onnx", parity_clips=not_test[:70])
    assert 64 in sizes  # the gate's largest batch reached ONNX Runtime whole
    meta = read_metadata(onnx.load(tmp_path / "e.onnx"))
    assert "test_metrics" not in meta.extra  # no test clip among the parity clips: no figure


def test_encoders_that_differ_in_a_node_attribute_cannot_share_one(members, tmp_path):
    other = onnx.load(members[1])
    norms = [node for node in other.graph.node if node.op_type == "LayerNormalization"]
    epsilon = next(a for a in norms[0].attribute if a.name == "epsilon")
    epsilon.f = 0.5
    onnx.save(other, tmp_path / "epsilon.onnx")
    with pytest.raises(ModelError, match="differ in structure"):
        export_ensemble([members[0], tmp_path / "epsilon.onnx"], tmp_path / "x.onnx")


def test_a_member_that_loses_exactly_one_point_is_accepted(monkeypatch):
    from ser.export import ensemble

    truth = np.zeros(100, int)
    own = np.eye(2)[np.r_[np.zeros(13, int), np.ones(87, int)]]  # 13 of 100 right
    shared = np.eye(2)[np.r_[np.zeros(12, int), np.ones(88, int)]]  # 12 of 100: one point less
    own_accuracy = float(np.mean(own.argmax(1) == truth))
    monkeypatch.setattr(ensemble, "onnx_accuracy", lambda model, rows, targets: own_accuracy)
    checks = ensemble._member_checks(
        [Path("a.onnx")], [None], [1], [shared], np.zeros((100, 4)), truth
    )
    assert checks[0].own == pytest.approx(0.13) and checks[0].shared == pytest.approx(0.12)


def test_a_fixed_length_member_makes_the_ensemble_fixed_length(
    members, synthetic_manifest, tiny_whisper, tmp_path
):
    config = replace(QUICK, backbone=str(tiny_whisper), head="reference")
    train_neural(load_corpus(synthetic_manifest), tmp_path / "ref", tmp_path / "cache", config)
    export_neural(tmp_path / "ref", tmp_path / "ref.onnx")
    export_ensemble([members[0], tmp_path / "ref.onnx"], tmp_path / "e.onnx")
    merged = onnx.load(tmp_path / "e.onnx")
    meta = read_metadata(merged)
    assert meta.dynamic_length is False and meta.extra["head"] == "pooled,reference"
    assert merged.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 16_000
