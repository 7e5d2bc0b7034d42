"""ser-train neural on synthetic audio, tiny random encoders: learns, saves, reloads, caches."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ser.corpus import load_corpus
from ser.errors import CorpusError, ModelError
from ser.training.checkpoint import load_checkpoint
from ser.training.cli import main as train_main
from ser.training.neural import NeuralConfig, balanced_indices, encode_corpus, train_neural

FAST = NeuralConfig(window_s=1.0, views=2, epochs=12, batch_size=16, learning_rate=3e-3)


@pytest.fixture(scope="module")
def whisper_run(synthetic_manifest, tiny_whisper, tmp_path_factory):
    config = replace(FAST, backbone=str(tiny_whisper), head="pooled", augment=True)
    cache = tmp_path_factory.mktemp("states")
    out = tmp_path_factory.mktemp("whisper-pooled")
    return train_neural(load_corpus(synthetic_manifest), out, cache, config), cache, config


def test_pooled_head_on_whisper_learns_above_chance(whisper_run):
    run, _, _ = whisper_run
    assert run.metrics["test"]["accuracy"] >= 0.4  # chance is 0.125
    assert run.metrics["validation"]["n"] == 16 and run.metrics["test"]["n"] == 24
    assert len(run.history["train_loss"]) == 12
    assert run.history["train_loss"][-1] < run.history["train_loss"][0]
    for name in ("head.safetensors", "config.json", "metrics.json", "training_curves.png",
                 "confusion_matrix.png"):  # fmt: skip
        assert (run.out_dir / name).stat().st_size > 0
    timing = run.metrics["timing"]
    assert timing["epoch_speedup"] > 1 and timing["samples_per_epoch"] == int(1.5 * 8 * 8)


def test_reference_head_on_wav2vec2_learns_above_chance(
    synthetic_manifest, tiny_wav2vec2, tmp_path
):
    config = replace(FAST, backbone=str(tiny_wav2vec2), head="reference", augment=False, epochs=20)
    run = train_neural(load_corpus(synthetic_manifest), tmp_path / "m", tmp_path / "c", config)
    assert run.metrics["test"]["accuracy"] >= 0.25
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (saved["head"], saved["family"], saved["frames"]) == ("reference", "waveform", 49)


def test_checkpoint_round_trip_gives_the_same_predictions(whisper_run, synthetic_manifest):
    run, cache, config = whisper_run
    checkpoint = load_checkpoint(run.out_dir)
    assert checkpoint.config["backbone"] == config.backbone
    corpus = encode_corpus(load_corpus(synthetic_manifest), cache, config)
    with torch.inference_mode():
        logits = checkpoint.head(corpus.test.states[:, 0].float(), corpus.test.valid[:, 0])
    accuracy = float((logits.argmax(1) == corpus.test.targets).float().mean())
    assert accuracy == pytest.approx(run.metrics["test"]["accuracy"], abs=1e-4)


def test_second_run_uses_the_cache_not_the_encoder(whisper_run, synthetic_manifest, tmp_path):
    run, cache, config = whisper_run
    from ser.training.backbones import load_backbone

    backbone = load_backbone(config.backbone)
    calls = []
    backbone.register_forward_hook(lambda *args: calls.append(args[1][0].shape[0]))
    again = train_neural(
        load_corpus(synthetic_manifest), tmp_path, cache, config, backbone=backbone
    )
    assert sum(calls) == 16  # only the two timing probes; no clip was encoded again
    assert again.metrics["test"]["accuracy"] == run.metrics["test"]["accuracy"]  # reproducible


def test_balanced_sampling_draws_classes_equally():
    targets = torch.tensor([0] * 90 + [1] * 10)
    draws = balanced_indices(targets, 2, np.random.default_rng(0))
    assert draws.size == int(1.5 * 90 * 2)
    assert abs((targets[draws] == 1).float().mean().item() - 0.5) < 0.06


def test_bad_inputs_fail_before_any_encoding(synthetic_manifest, tmp_path, tiny_whisper):
    rows = synthetic_manifest.read_text().splitlines()
    no_surprise = [r for r in rows if ",surprised," not in r or not r.endswith(",train")]
    (tmp_path / "m.csv").write_text("\n".join(no_surprise).replace("path,", "path,", 1))
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(
        r if r.startswith("path") else f"{synthetic_manifest.parent}/{r}" for r in no_surprise
    ))  # fmt: skip
    config = replace(FAST, backbone=str(tiny_whisper))
    with pytest.raises(CorpusError, match="train split has no clips of class surprised"):
        train_neural(load_corpus(manifest), tmp_path / "o", tmp_path / "c", config)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"garbage")
    manifest.write_text("\n".join([*rows[:1], f"{broken},calm,,train", *(
        f"{synthetic_manifest.parent}/{r}" for r in rows[1:]
    )]))  # fmt: skip
    with pytest.raises(CorpusError, match=r"unreadable clip in corpus: .*broken\.wav"):
        train_neural(load_corpus(manifest), tmp_path / "o", tmp_path / "c", config)
    with pytest.raises(ModelError, match="cannot load a model configuration"):
        train_neural(load_corpus(synthetic_manifest), tmp_path / "o", tmp_path / "c",
                     replace(FAST, backbone=str(tmp_path / "nowhere")))  # fmt: skip
    assert not (tmp_path / "c").exists()


def test_cli_neural_reports_one_line_errors(synthetic_manifest, tmp_path):
    result = CliRunner().invoke(
        train_main,
        ["neural", "--data", str(synthetic_manifest), "--out", str(tmp_path / "o"),
         "--backbone", str(tmp_path / "nowhere")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "cannot load a model configuration" in result.output and "Traceback" not in result.output


def test_cli_neural_trains(synthetic_manifest, tiny_whisper, tmp_path):
    result = CliRunner().invoke(
        train_main,
        ["neural", "--data", str(synthetic_manifest), "--out", str(tmp_path / "o"),
         "--cache-dir", str(tmp_path / "c"), "--backbone", str(tiny_whisper), "--window", "1",
         "--epochs", "3", "--views", "1", "--no-augment", "--head", "pooled", "--layers", "last",
         "--ensemble", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "validation accuracy=" in result.output and "test accuracy=" in result.output
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert (saved["layers"], saved["ensemble"]) == ("last", 2)
