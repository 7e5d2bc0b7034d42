"""ser-export neural and scoring waveform models with ser-batch, on tiny random encoders."""

import csv
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ser.batch.cli import main as batch_main
from ser.corpus import load_corpus, select
from ser.errors import ModelError
from ser.export.cli import main as export_main
from ser.export.ensemble import export_ensemble, share_encoder
from ser.export.neural import (
    QuantizationRefused,
    build_classifier,
    check_exported,
    export_neural,
)
from ser.export.parity import ParityError
from ser.export.speaker import export_speaker
from ser.metadata import ModelMetadata
from ser.training.backbones import load_backbone
from ser.training.checkpoint import load_checkpoint
from ser.training.heads import HeadEnsemble
from ser.training.neural import NeuralConfig, train_neural

from synth import class_signal

QUICK = NeuralConfig(window_s=1.0, views=1, epochs=2, augment=False)


@pytest.mark.parametrize("backbone", ["whisper", "wav2vec2"])
@pytest.mark.parametrize("head", ["pooled", "reference"])
def test_export_passes_parity_and_carries_metadata(checkpoints, tmp_path, backbone, head):
    exported = export_neural(checkpoints[backbone, head], tmp_path / "m.onnx")
    assert exported.parity.ok and exported.parity.n == 16
    model = onnx.load(tmp_path / "m.onnx")
    assert model.opset_import[0].version >= 17
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    assert (meta.frontend, meta.window_s, meta.sample_rate) == ("waveform", 1.0, 16_000)
    assert meta.dynamic_length is (head == "pooled")
    assert meta.extra_json("head") == head and meta.extra_json("test_metrics")["n"] == 24
    assert {"backbone", "manifest_hash", "versions"} <= set(meta.extra)
    assert [o.name for o in model.graph.output] == ["logits", "probs"]


def test_an_ensemble_averages_its_members_and_exports_as_one_graph(
    synthetic_manifest, tiny_whisper, tmp_path
):
    clips = load_corpus(synthetic_manifest)
    config = replace(QUICK, backbone=str(tiny_whisper), head="pooled", seed=3, ensemble=2)
    run = train_neural(clips, tmp_path / "ens", tmp_path / "cache", config)
    assert [m["seed"] for m in run.metrics["members"]] == [3, 4]
    head = load_checkpoint(tmp_path / "ens").head
    assert isinstance(head, HeadEnsemble) and len(head.members) == 2
    layers, _, hidden = head.members[0].standardize.mean.shape
    states = torch.randn(5, layers, 7, hidden)
    with torch.inference_mode():
        members = torch.stack([torch.softmax(m(states), -1) for m in head.members])
        np.testing.assert_allclose(
            torch.softmax(head(states), -1).numpy(), members.mean(0).numpy(), atol=1e-6
        )
        assert not torch.allclose(members[0], members[1])  # two different heads
    exported = export_neural(tmp_path / "ens", tmp_path / "ens.onnx")
    assert exported.parity.ok and exported.metadata.extra_json("ensemble") == 2


def test_a_narrower_whisper_range_is_trained_exported_and_recorded(
    synthetic_manifest, tiny_whisper, checkpoints, tmp_path
):
    """The range the encoder really ran travels into the config, the graph (parity against
    PyTorch's frontend with that floor), the metadata and speaker mode; models or heads of
    another range are refused, not merged (an optimised graph holds the floor as a weight)."""
    clips = load_corpus(synthetic_manifest)
    config = replace(
        QUICK, backbone=str(tiny_whisper), whisper_dynamic_range_db=40.0, normalize="speaker",
        speaker_bottleneck=4,
    )  # fmt: skip
    train_neural(clips, tmp_path / "narrow", tmp_path / "cache", config)
    narrow_checkpoint = load_checkpoint(tmp_path / "narrow")
    assert narrow_checkpoint.config["whisper_dynamic_range_db"] == 40.0
    assert build_classifier(narrow_checkpoint).backbone.frontend.floor == 4.0
    exported = export_neural(tmp_path / "narrow", tmp_path / "narrow.onnx", optimize=True)
    assert exported.parity.ok and exported.metadata.extra_json("whisper_dynamic_range_db") == 40
    export_speaker(tmp_path / "narrow.onnx", tmp_path / "narrow", tmp_path / "speaker.onnx")

    wide = load_checkpoint(checkpoints["whisper", "pooled"])
    assert wide.config["whisper_dynamic_range_db"] == 80.0
    export_neural(checkpoints["whisper", "pooled"], tmp_path / "wide.onnx", optimize=True)
    with pytest.raises(ModelError, match=r"dynamic ranges differ \(40 dB, 80 dB\)"):
        export_ensemble([tmp_path / "narrow.onnx", tmp_path / "wide.onnx"], tmp_path / "e.onnx")
    graphs = [onnx.load(tmp_path / name) for name in ("narrow.onnx", "wide.onnx")]
    with pytest.raises(ModelError, match=r"encoder constant .* differs"):  # metadata aside
        share_encoder(*graphs)
    with pytest.raises(ModelError, match=r"range 80 dB.*40 dB"):
        export_speaker(tmp_path / "wide.onnx", tmp_path / "narrow", tmp_path / "bad.onnx")
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "bad.onnx").exists()


def test_training_records_the_range_its_encoder_ran(synthetic_manifest, tiny_whisper, tmp_path):
    """A backbone handed to train_neural wins over the config's wish, so the checkpoint never
    claims a frontend its heads did not see."""
    clips = load_corpus(synthetic_manifest)
    backbone = load_backbone(str(tiny_whisper), whisper_dynamic_range_db=50.0)
    config = replace(QUICK, backbone=str(tiny_whisper), epochs=1)
    train_neural(clips, tmp_path / "run", tmp_path / "cache", config, backbone=backbone)
    assert load_checkpoint(tmp_path / "run").config["whisper_dynamic_range_db"] == 50.0


@pytest.mark.parametrize("backbone", ["whisper", "wav2vec2"])
def test_pooled_graph_takes_any_length_and_batch(checkpoints, tmp_path, backbone):
    export_neural(checkpoints[backbone, "pooled"], tmp_path / "m.onnx")
    classifier = build_classifier(load_checkpoint(checkpoints[backbone, "pooled"]))
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 8_000), (3, 40_000), (2, 16_001), (1, 65_200), (2, 23_333)]:
        audio = (np.random.default_rng(0).standard_normal(shape) * 0.1).astype(np.float32)
        (probs,) = session.run(["probs"], {"audio": audio})
        with torch.inference_mode():
            expected = classifier(torch.from_numpy(audio))[1].numpy()
        np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_check_command_and_a_mismatched_checkpoint(checkpoints, tmp_path):
    export_neural(checkpoints["whisper", "pooled"], tmp_path / "m.onnx")
    parity, invariance = check_exported(tmp_path / "m.onnx", checkpoints["whisper", "pooled"])
    assert parity.ok and invariance.ok
    result = CliRunner().invoke(
        export_main,
        ["check", str(tmp_path / "m.onnx"), "--checkpoint", str(checkpoints["whisper", "pooled"])],
    )
    assert result.exit_code == 0 and "parity ok" in result.output
    with pytest.raises(ParityError, match="disagrees"):
        check_exported(tmp_path / "m.onnx", checkpoints["wav2vec2", "pooled"])
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        check_exported(tmp_path / "junk.onnx", checkpoints["whisper", "pooled"])


def test_optimize_and_quantize(checkpoints, synthetic_manifest, tmp_path):
    folder = checkpoints["wav2vec2", "pooled"]
    validation = select(load_corpus(synthetic_manifest), "validation")
    plain = export_neural(folder, tmp_path / "plain.onnx")
    optimized = export_neural(folder, tmp_path / "opt.onnx", optimize=True)
    assert optimized.parity.ok and (tmp_path / "opt.onnx").is_file()
    export_neural(
        folder, tmp_path / "int8.onnx", quantize=True, validation_clips=validation,
        max_accuracy_drop=1.0,
    )  # fmt: skip
    props = {p.key: p.value for p in onnx.load(tmp_path / "int8.onnx").metadata_props}
    assert "validation_accuracy_int8" in props["quantization"]
    assert (tmp_path / "int8.onnx").stat().st_size < (tmp_path / "plain.onnx").stat().st_size
    assert any(n.op_type == "MatMulNBits" for n in onnx.load(tmp_path / "int8.onnx").graph.node)
    with pytest.raises(QuantizationRefused, match=r"validation accuracy .* against .* in float32"):
        export_neural(
            folder, tmp_path / "refused.onnx", quantize=True, validation_clips=validation,
            max_accuracy_drop=-1.0,
        )  # fmt: skip
    assert not (tmp_path / "refused.onnx").exists()
    with pytest.raises(ModelError, match="need validation clips"):
        export_neural(folder, tmp_path / "x.onnx", quantize=True)
    with pytest.raises(ModelError, match="choose one"):
        export_neural(folder, tmp_path / "x.onnx", quantize=True, fp16=True)
    half = export_neural(folder, tmp_path / "fp16.onnx", fp16=True, validation_clips=validation,
                         max_accuracy_drop=1.0)  # fmt: skip
    graph = onnx.load(tmp_path / "fp16.onnx")
    assert (
        "validation_accuracy_fp16" in {p.key: p.value for p in graph.metadata_props}["quantization"]
    )
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 in
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.graph.initializer)
    assert half.parity.ok
    assert plain.metadata.extra_json("head") == "pooled"


def _write_files(folder, lengths):
    folder.mkdir(parents=True, exist_ok=True)
    for n, seconds in enumerate(lengths):
        sf.write(folder / f"f{n}.wav", class_signal(n % 8, seconds, seed=n), 16_000)
    (folder / "bad.wav").write_bytes(b"RIFF....")


def test_batched_scoring_equals_one_file_at_a_time(checkpoints, tmp_path):
    export_neural(checkpoints["whisper", "pooled"], tmp_path / "m.onnx")
    _write_files(tmp_path / "audio", [0.3, 1.0, 2.5, 0.7, 3.2, 1.1])
    reports = {}
    for batch in (1, 16):
        out = tmp_path / f"r{batch}.csv"
        result = CliRunner().invoke(
            batch_main,
            ["score", str(tmp_path / "audio"), "-o", str(out), "--model", str(tmp_path / "m.onnx"),
             "--batch-size", str(batch)],
        )  # fmt: skip
        assert result.exit_code == 3, result.output  # bad.wav
        reports[batch] = list(csv.DictReader(out.open()))
    assert len(reports[1]) == 7
    for one, many in zip(reports[1], reports[16], strict=True):
        assert one["path"] == many["path"] and one["status"] == many["status"]
        for key in one:
            if key.startswith("p_") and one[key]:
                assert float(one[key]) == pytest.approx(float(many[key]), abs=2e-4)


def test_segments_file_has_a_row_per_window(checkpoints, tmp_path):
    export_neural(checkpoints["whisper", "pooled"], tmp_path / "m.onnx")
    _write_files(tmp_path / "audio", [2.5])
    result = CliRunner().invoke(
        batch_main,
        ["score", str(tmp_path / "audio" / "f0.wav"), "-o", str(tmp_path / "r.csv"),
         "--model", str(tmp_path / "m.onnx"), "--hop", "0.5",
         "--segments", str(tmp_path / "s.csv")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "s.csv").open()))
    assert [(r["start_s"], r["end_s"]) for r in rows] == [
        ("0.000", "1.000"), ("0.500", "1.500"), ("1.000", "2.000"), ("1.500", "2.500")
    ]  # fmt: skip
    file_row = next(csv.DictReader((tmp_path / "r.csv").open()))
    mean = np.mean([float(r["p_calm"]) for r in rows])
    assert float(file_row["p_calm"]) == pytest.approx(mean, abs=2e-4)


def test_reference_head_scores_fixed_windows(checkpoints, tmp_path):
    export_neural(checkpoints["wav2vec2", "reference"], tmp_path / "m.onnx")
    _write_files(tmp_path / "audio", [0.4, 2.2])
    result = CliRunner().invoke(
        batch_main,
        ["score", str(tmp_path / "audio"), "-o", "-", "--model", str(tmp_path / "m.onnx")],
    )
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["status"] for r in rows] == ["error", "ok", "ok"]


def test_long_files_are_streamed_with_the_same_result(checkpoints, tmp_path, monkeypatch):
    export_neural(checkpoints["whisper", "pooled"], tmp_path / "m.onnx")
    signal = np.concatenate([class_signal(n % 8, 0.9, seed=n) for n in range(6)])
    sf.write(tmp_path / "long.wav", np.stack([signal, signal], axis=1), 16_000)
    args = [
        "score",
        str(tmp_path / "long.wav"),
        "--model",
        str(tmp_path / "m.onnx"),
        "--hop",
        "0.5",
    ]
    whole = CliRunner().invoke(batch_main, [*args, "-o", str(tmp_path / "whole.csv")])
    monkeypatch.setattr("ser.batch.scoring.STREAM_ABOVE_S", 1.0)
    streamed_calls = []
    import ser.batch.scoring as scoring

    original = scoring.stream_audio
    monkeypatch.setattr(
        scoring, "stream_audio", lambda *a, **k: streamed_calls.append(a) or original(*a, **k)
    )
    streamed = CliRunner().invoke(batch_main, [*args, "-o", str(tmp_path / "stream.csv")])
    assert whole.exit_code == streamed.exit_code == 0, streamed.output
    assert len(streamed_calls) == 1
    a, b = (next(csv.DictReader((tmp_path / n).open())) for n in ("whole.csv", "stream.csv"))
    assert a["duration_s"] == b["duration_s"] == "5.400"
    for key in a:
        if key.startswith("p_"):
            assert float(a[key]) == pytest.approx(float(b[key]), abs=2e-4)
