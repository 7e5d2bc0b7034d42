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
