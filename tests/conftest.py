"""Shared fixtures: a synthetic corpus and a forest trained and exported on it, built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth import write_corpus


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 classes x (8 train, 2 validation, 3 test) one-second clips."""
    root = tmp_path_factory.mktemp("corpus")
    return write_corpus(root, {"train": 8, "validation": 2, "test": 3})


@pytest.fixture(scope="session")
def trained_forest(synthetic_manifest: Path, tmp_path_factory: pytest.TempPathFactory):
    from ser.corpus import load_corpus
    from ser.training.forest import train_forest

    out = tmp_path_factory.mktemp("forest")
    cache = tmp_path_factory.mktemp("cache")
    return train_forest(load_corpus(synthetic_manifest), out, cache, seed=0)


@pytest.fixture(scope="session")
def forest_onnx(trained_forest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ser.export.forest import export_forest

    path = tmp_path_factory.mktemp("export") / "forest.onnx"
    export_forest(trained_forest.out_dir, path)
    return path


@pytest.fixture(scope="session")
def speech_manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two-second clips of speech-like bursts in quiet noise, louder with the class."""
    import csv

    import soundfile as sf

    from ser.labels import LABELS

    from synth import bursts

    root = tmp_path_factory.mktemp("speech-corpus")
    rows, seed = [], 0
    for split, count in {"train": 4, "validation": 1, "test": 1}.items():
        for index, label in enumerate(LABELS):
            for n in range(count):
                seed += 1
                start = 0.3 + 0.1 * (seed % 5)
                signal = bursts([(start, start + 1.0)], 2.0, seed=seed)
                name = f"{split}-{label}-{n}.wav"
                sf.write(root / name, signal * (0.5 + 0.1 * index), 16_000)
                rows.append({"path": name, "label": label, "speaker": f"s{n}", "split": split})
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return str(manifest)


@pytest.fixture(scope="session")
def gated_onnx(speech_manifest, tiny_whisper, tmp_path_factory) -> Path:
    """A tiny Whisper model trained with ``--pool speech`` (4 s window) and exported: its
    metadata says ``pool`` = ``speech``, so ``vad`` scoring joins sentences by default."""
    from ser.corpus import load_corpus
    from ser.export.neural import export_neural
    from ser.training.neural import NeuralConfig, train_neural

    config = NeuralConfig(window_s=4.0, views=1, epochs=2, augment=False, pool="speech",
                          backbone=str(tiny_whisper))  # fmt: skip
    root = tmp_path_factory.mktemp("gated")
    train_neural(load_corpus(speech_manifest), root / "run", root / "cache", config)
    export_neural(root / "run", root / "gated.onnx")
    return root / "gated.onnx"


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised wav2vec2 with the real architecture's frame rate (320 samples)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised Whisper (2 encoder layers, width 32) with the real frontend."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
        max_target_positions=16, num_mel_bins=80, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, begin_suppress_tokens=None, suppress_tokens=None,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tiny-whisper")
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def checkpoints(synthetic_manifest, tiny_whisper, tiny_wav2vec2, tmp_path_factory):
    """Tiny neural checkpoints for each (backbone, head), trained once for the whole run."""
    from dataclasses import replace

    from ser.corpus import load_corpus
    from ser.training.neural import NeuralConfig, train_neural

    quick = NeuralConfig(window_s=1.0, views=1, epochs=2, augment=False)
    clips = load_corpus(synthetic_manifest)
    cache = tmp_path_factory.mktemp("states")
    folders = {}
    for name, backbone in (("whisper", tiny_whisper), ("wav2vec2", tiny_wav2vec2)):
        for head in ("pooled", "reference"):
            out = tmp_path_factory.mktemp(f"{name}-{head}")
            train_neural(clips, out, cache, replace(quick, backbone=str(backbone), head=head))
            folders[name, head] = out
    return folders
