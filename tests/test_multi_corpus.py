"""Several corpora in one neural run: label subsets, the restricted loss, balanced sampling,
per-corpus metrics, per-recording normalisation and the calibration that travels in the graph.

Two tiny generated corpora teach different classes (A: neutral..fearful, B: happy..surprised),
so each lacks two classes the other has; a class sounds the same in both (synth.class_signal).
"""

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from ser.corpus import check_corpora, load_corpora, select
from ser.errors import CorpusError
from ser.export.neural import build_classifier, export_neural, parity_inputs
from ser.labels import LABELS
from ser.metadata import ModelMetadata
from ser.training.calibration import fit_temperature, reliability
from ser.training.checkpoint import load_checkpoint
from ser.training.cli import main as train_main
from ser.training.heads import RecordingNorm
from ser.training.losses import corpus_loss
from ser.training.neural import NeuralConfig, encode_corpus, train_head
from ser.training.sampling import balanced_indices, draw_weights

from synth import class_signal

LABELS_A, LABELS_B = LABELS[:6], LABELS[2:]
TWO = NeuralConfig(
    window_s=1.0, views=(2, 1), epochs=6, batch_size=16, learning_rate=3e-3, loss="restricted"
)


def write_labelled_corpus(root: Path, labels, per_split: dict[str, int], level: float) -> Path:
    """``manifest.csv`` over WAVs of ``labels``; ``level`` scales the whole corpus's loudness."""
    root.mkdir(parents=True)
    rows, seed = [], int(level * 1000)
    for split, count in per_split.items():
        for label in labels:
            for n in range(count):
                seed += 1
                signal = level * class_signal(LABELS.index(label), 1.0, seed)
                sf.write(root / f"{split}-{label}-{n}.wav", signal, 16_000)
                rows.append({"path": f"{split}-{label}-{n}.wav", "label": label, "split": split})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


@pytest.fixture(scope="module")
def two_corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("two")
    a = write_labelled_corpus(root / "alpha", LABELS_A, {"train": 6, "validation": 2, "test": 2}, 1)
    b = write_labelled_corpus(root / "beta", LABELS_B, {"train": 3, "validation": 2, "test": 2}, 2)
    return a, b


@pytest.fixture(scope="module")
def encoded(two_corpora, tiny_whisper, tmp_path_factory):
    config = replace(TWO, backbone=str(tiny_whisper))
    cache = tmp_path_factory.mktemp("states")
    return encode_corpus(load_corpora(two_corpora), cache, config), config


@pytest.fixture(scope="module")
def restricted_run(encoded, tmp_path_factory):
    corpus, config = encoded
    return train_head(corpus, tmp_path_factory.mktemp("restricted"), config)


def test_corpora_keep_their_names_splits_and_label_sets(two_corpora, encoded):
    clips = load_corpora(two_corpora)
    assert {clip.corpus for clip in clips} == {"alpha", "beta"}
    corpus, _ = encoded
    alpha, beta = corpus.parts
    assert (alpha.name, alpha.labels, beta.name, beta.labels) == (
        "alpha", tuple(LABELS_A), "beta", tuple(LABELS_B),
    )  # fmt: skip
    assert (alpha.train.states.shape[1], beta.train.states.shape[1]) == (2, 1)  # views per corpus
    assert (len(alpha.train), len(beta.validation), len(beta.test)) == (36, 12, 12)
    assert corpus.subset(["beta"]).parts == (beta,)


def test_restricted_loss_ignores_classes_outside_the_label_set():
    torch.manual_seed(0)
    logits = torch.randn(4, 8, requires_grad=True)
    targets = torch.tensor([2, 3, 4, 5])
    allowed = torch.zeros(4, 8, dtype=torch.bool)
    allowed[:, 2:] = True  # calm and neutral are outside this corpus
    corpus_loss(logits, targets, allowed, kind="restricted", label_smoothing=0.1).backward()
    assert torch.all(logits.grad[:, :2] == 0) and torch.all(logits.grad[:, 2:].abs().sum(1) > 0)
    logits.grad = None
    corpus_loss(logits, targets, allowed, kind="plain", label_smoothing=0.1).backward()
    assert torch.all(logits.grad[:, :2] > 0)  # plain cross-entropy pushes them down
    everything = torch.ones(4, 8, dtype=torch.bool)
    logits = logits.detach()
    reference = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    for kind in ("restricted", "plain"):
        loss = corpus_loss(logits, targets, everything, kind=kind, label_smoothing=0.1)
        assert float(loss) == pytest.approx(float(reference), rel=1e-6)
    with pytest.raises(ValueError, match="expected plain, restricted"):
        corpus_loss(logits, targets, allowed, kind="focal")


def test_sampling_modes_balance_what_they_say():
    # corpus 0: 100 clips of each of classes 0, 1; corpus 1: 10 clips of each of classes 1, 2
    targets = np.array([0] * 100 + [1] * 100 + [1] * 10 + [2] * 10)
    corpora = np.array([0] * 200 + [1] * 20)

    def share(weights, mask):
        return float(weights[mask].sum())

    weights = draw_weights(targets, corpora, "class-corpus")
    for c in range(3):
        assert share(weights, targets == c) == pytest.approx(1 / 3)
    assert share(weights, (targets == 1) & (corpora == 1)) == pytest.approx(1 / 6)
    weights = draw_weights(targets, corpora, "corpus-class")
    assert share(weights, corpora == 1) == pytest.approx(0.5)
    assert share(weights, targets == 1) == pytest.approx(0.5)  # in both corpora: drawn twice
    weights = draw_weights(targets, corpora, "class")
    assert share(weights, targets == 1) == pytest.approx(1 / 3)
    assert share(weights, (targets == 1) & (corpora == 1)) == pytest.approx(1 / 33)
    draws = balanced_indices(
        torch.from_numpy(targets), 3, np.random.default_rng(0), torch.from_numpy(corpora)
    )
    assert draws.size == int(1.5 * 110 * 3)
    assert abs((corpora[draws] == 1).mean() - 0.5) < 0.08  # class 2 and half of class 1
    with pytest.raises(ValueError, match="unknown sampling"):
        draw_weights(targets, corpora, "uniform")


def test_per_corpus_metrics_selection_and_reports(restricted_run):
    run = restricted_run
    metrics = run.metrics
    alpha, beta = metrics["corpora"]["alpha"], metrics["corpora"]["beta"]
    assert (alpha["labels"], beta["labels"]) == (list(LABELS_A), list(LABELS_B))
    for scores, labels in ((alpha, LABELS_A), (beta, LABELS_B)):
        matrix = np.array(scores["test"]["confusion_matrix"])
        assert scores["test"]["n"] == matrix.sum() == 2 * len(labels)
        absent = [LABELS.index(label) for label in LABELS if label not in labels]
        assert matrix[absent].sum() == 0  # no true clip of a class the corpus lacks
    expected = np.mean([alpha["validation"]["uar"], beta["validation"]["uar"]])
    assert metrics["validation"]["mean_corpus_uar"] == pytest.approx(expected, abs=1e-3)
    best = metrics["best_epoch"]
    history = run.history["validation_uar"]
    assert history[best - 1] == max(history)
    assert metrics["validation"]["mean_corpus_uar"] == pytest.approx(max(history), abs=1e-3)
    assert metrics["test"]["mean_corpus_uar"] > 1 / 6  # learned something on both corpora
    for name in ("confusion_matrix_alpha.png", "confusion_matrix_beta.png", "reliability.png"):
        assert (run.out_dir / name).stat().st_size > 0
    saved = json.loads((run.out_dir / "config.json").read_text())
    assert [c["name"] for c in saved["corpora"]] == ["alpha", "beta"]
    assert [c["views"] for c in saved["corpora"]] == [2, 1]
    assert saved["corpora"][0]["manifest_hash"] != saved["corpora"][1]["manifest_hash"]
    assert (saved["loss"], saved["sampling"]) == ("restricted", "class-corpus")


def test_temperature_is_fitted_on_validation_and_lowers_validation_nll(restricted_run, encoded):
    calibration = restricted_run.metrics["calibration"]
    temperature = calibration["temperature"]
    assert temperature > 0 and temperature != 1.0
    for split in ("validation", "test"):
        for name in ("alpha", "beta"):
            assert {"ece_before", "ece_after"} <= set(calibration[split][name])
        diagram = calibration[split]["all"]["after"]
        assert sum(diagram["count"]) == 24 and 0 <= diagram["ece"] <= 1
    head = load_checkpoint(restricted_run.out_dir).head
    corpus, _ = encoded
    validation = corpus.validation
    with torch.inference_mode():
        logits = head(validation.states[:, 0].float(), validation.valid[:, 0])
    nll = torch.nn.functional.cross_entropy
    assert float(nll(logits / temperature, validation.targets)) <= float(
        nll(logits, validation.targets)
    )


def test_export_carries_temperature_corpora_and_per_corpus_metrics(restricted_run, tmp_path):
    exported = export_neural(restricted_run.out_dir, tmp_path / "m.onnx")
    assert exported.parity.ok and exported.invariance.ok
    model = onnx.load(tmp_path / "m.onnx")
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    calibration = meta.extra_json("calibration")
    temperature = restricted_run.metrics["calibration"]["temperature"]
    assert calibration["temperature"] == pytest.approx(temperature, rel=1e-5)
    assert {"test_ece_before", "test_ece_after"} <= set(calibration)
    assert [c["name"] for c in meta.extra_json("corpora")] == ["alpha", "beta"]
    assert set(meta.extra_json("test_metrics")["corpora"]) == {"alpha", "beta"}
    # the temperature is inside the graph: its logits are the raw head's divided by T
    raw = build_classifier(load_checkpoint(restricted_run.out_dir))
    raw.temperature.fill_(1.0)
    windows = parity_inputs((), round(16_000 * 1.0), count=4)
    with torch.inference_mode():
        raw_logits = raw(torch.from_numpy(windows))[0].numpy()
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits = session.run(["logits"], {"audio": windows})[0]
    np.testing.assert_allclose(onnx_logits, raw_logits / temperature, rtol=1e-4, atol=1e-4)


def test_plain_loss_and_recording_norm_train_from_the_same_cache(encoded, tmp_path):
    corpus, config = encoded
    run = train_head(
        corpus, tmp_path / "plain", replace(config, loss="plain", recording_norm="standardize",
                                            sampling="corpus-class", epochs=2, calibrate=False),
    )  # fmt: skip
    assert run.metrics["calibration"]["temperature"] == 1.0
    head = load_checkpoint(tmp_path / "plain").head
    assert head.recording.mode == "standardize"
    exported = export_neural(tmp_path / "plain", tmp_path / "plain.onnx")
    assert exported.parity.ok and exported.invariance.ok


def test_recording_norm_is_per_row_and_removes_offsets_and_scale():
    torch.manual_seed(0)
    states = torch.randn(3, 2, 10, 4)
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[1, 6:] = False  # padding must not count
    for mode in ("mean", "standardize"):
        norm = RecordingNorm(mode)
        whole = norm(states, valid)
        alone = torch.cat([norm(states[i : i + 1], valid[i : i + 1]) for i in range(3)])
        torch.testing.assert_close(whole, alone)
    shifted = RecordingNorm("mean")(states + 5.0, valid)
    torch.testing.assert_close(shifted, RecordingNorm("mean")(states, valid), atol=1e-5, rtol=0)
    scaled = RecordingNorm("standardize")(3.0 * states + 1.0, valid)
    torch.testing.assert_close(
        scaled[:, :, :6], RecordingNorm("standardize")(states, valid)[:, :, :6], atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match="expected none, mean, standardize"):
        RecordingNorm("speaker")


def test_fit_temperature_recovers_a_known_temperature_and_lowers_ece():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0, 3, (4000, 6)))
    truth_probs = torch.softmax(logits / 2.5, dim=1).numpy()  # the model is overconfident
    targets = torch.tensor([rng.choice(6, p=p) for p in truth_probs])
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(2.5, rel=0.1)
    before = reliability(torch.softmax(logits, 1).numpy(), targets.numpy())
    after = reliability(torch.softmax(logits / temperature, 1).numpy(), targets.numpy())
    assert after.ece < before.ece / 3 and sum(after.count) == 4000


def test_corpora_checks_name_the_corpus(two_corpora, tmp_path):
    clips = load_corpora(two_corpora)
    check_corpora(clips, ("train", "validation"))
    beta_train_without_surprised = [
        clip for clip in clips
        if not (clip.corpus == "beta" and clip.label == "surprised" and clip.split == "train")
    ]  # fmt: skip
    with pytest.raises(CorpusError, match="corpus beta: the validation split has class surprised"):
        check_corpora(beta_train_without_surprised, ("train", "validation"))
    no_disgust = [clip for clip in clips if clip.label != "disgust"]
    with pytest.raises(CorpusError, match="no corpus's train split has clips of class disgust"):
        check_corpora(no_disgust, ("train", "validation"))
    no_validation = [c for c in clips if not (c.corpus == "alpha" and c.split == "validation")]
    with pytest.raises(CorpusError, match="corpus alpha: the validation split is empty"):
        check_corpora(no_validation, ("train", "validation"))
    assert [c.corpus for c in load_corpora([two_corpora[0], two_corpora[0]])][-1] == "alpha-2"
    assert select(clips, "test")


def test_cli_takes_repeated_data_and_views(two_corpora, tiny_whisper, tmp_path):
    args = ["neural", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"),
            "--backbone", str(tiny_whisper), "--window", "1", "--epochs", "1", "--no-augment",
            "--data", str(two_corpora[0]), "--data", str(two_corpora[1])]  # fmt: skip
    result = CliRunner().invoke(train_main, [*args, "--views", "1", "--views", "1"])
    assert result.exit_code == 0, result.output
    assert "alpha test accuracy=" in result.output and "beta test accuracy=" in result.output
    assert "temperature" in result.output
    bad = CliRunner().invoke(train_main, [*args, "--views", "1", "--views", "2", "--views", "3"])
    assert bad.exit_code == 2 and "3 --views values for 2 corpora" in bad.output
