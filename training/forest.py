"""The classic baseline: a RandomForest over openSMILE eGeMAPS functionals.

As in the reference study: 100 trees, every feature considered at each split
(``max_features=1.0``), ``min_samples_leaf`` chosen by speaker-grouped cross-validation, fitted
on train and validation together (RAVDESS actors 1-22) and tested on the test split.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GroupKFold, cross_val_score

from ser.audio import SAMPLE_RATE, load_audio
from ser.corpus import Clip, check_splits, label_indices, manifest_hash, select
from ser.features import EgemapsExtractor
from ser.labels import LABELS
from ser.training.cache import ArrayCache, file_key
from ser.training.checks import check_readable
from ser.training.metrics import classification_metrics
from ser.training.plots import plot_confusion_matrix
from ser.training.progress import Stage, track

LEAF_GRID = (5, 10, 50, 100, 150, 200)
MODEL_FILE = "forest.joblib"
TEST_FEATURES_FILE = "test_features.npz"


@dataclass(frozen=True)
class ForestRun:
    """Where a trained forest was written and how it scored."""

    out_dir: Path
    min_samples_leaf: int
    metrics: dict


def extract_egemaps(
    clips: Sequence[Clip],
    cache: ArrayCache,
    extractor: EgemapsExtractor,
    *,
    desc: str = "eGeMAPS features",
) -> np.ndarray:
    """eGeMAPS features ``[clips, 88]``, from the cache where the audio is unchanged."""
    keys = [file_key(c.path, extractor.feature_set, extractor.version, SAMPLE_RATE) for c in clips]
    stored = [cache.get(key) for key in keys]
    missing = [i for i, entry in enumerate(stored) if entry is None]
    detail = f"{len(clips) - len(missing)} of {len(clips)} cached in {cache.folder} (1 KB a clip)"
    with Stage(desc, len(missing), "clip", detail=detail) as stage:
        for i in missing:
            stored[i] = {"features": extractor.extract(load_audio(clips[i].path))}
            cache.put(keys[i], **stored[i])
            stage.update()
    return np.stack([entry["features"] for entry in stored]).astype(np.float32)


def make_forest(min_samples_leaf: int, seed: int) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=100,
        max_features=1.0,
        min_samples_leaf=min_samples_leaf,
        random_state=seed,
        n_jobs=-1,
    )


def choose_min_samples_leaf(
    features: np.ndarray, targets: np.ndarray, groups: Sequence[str], seed: int
) -> tuple[int, dict[int, float]]:
    """The grid value with the best mean accuracy over speaker-grouped folds."""
    folds = GroupKFold(n_splits=min(5, len(set(groups))))
    scores = {}
    for leaf in track(LEAF_GRID, "min_samples_leaf cross-validation", "value"):
        fold_scores = cross_val_score(
            make_forest(leaf, seed), features, targets, groups=groups, cv=folds
        )
        scores[leaf] = round(float(fold_scores.mean()), 4)
    return max(scores, key=lambda leaf: (scores[leaf], -leaf)), scores


def train_forest(
    clips: Sequence[Clip], out_dir: Path, cache_dir: Path, *, seed: int = 0
) -> ForestRun:
    """Fit on train+validation, test on test; write model, metrics and plots to ``out_dir``."""
    check_splits(clips, ("train", "test"))
    fit_clips, test_clips = select(clips, "train", "validation"), select(clips, "test")
    check_readable([*fit_clips, *test_clips])
    out_dir.mkdir(parents=True, exist_ok=True)

    extractor = EgemapsExtractor()
    cache = ArrayCache(cache_dir, "egemaps")
    fit_x = extract_egemaps(fit_clips, cache, extractor, desc="eGeMAPS features, train+validation")
    test_x = extract_egemaps(test_clips, cache, extractor, desc="eGeMAPS features, test")
    fit_y, test_y = label_indices(fit_clips), label_indices(test_clips)
    groups = [clip.speaker or str(clip.path) for clip in fit_clips]

    leaf, cv_scores = choose_min_samples_leaf(fit_x, fit_y, groups, seed)
    forest = make_forest(leaf, seed).fit(fit_x, fit_y)
    metrics = classification_metrics(test_y, forest.predict(test_x), LABELS)

    joblib.dump(forest, out_dir / MODEL_FILE)
    np.savez(out_dir / TEST_FEATURES_FILE, features=test_x, targets=test_y)
    config = {
        "model": "forest",
        "labels": list(LABELS),
        "sample_rate": SAMPLE_RATE,
        "feature_set": extractor.feature_set,
        "opensmile_version": extractor.version,
        "feature_names": extractor.feature_names,
        "min_samples_leaf": leaf,
        "cv_accuracy_by_min_samples_leaf": cv_scores,
        "seed": seed,
        "fit_clips": len(fit_clips),
        "manifest_hash": manifest_hash(clips),
        "versions": {"python": platform.python_version(), "scikit-learn": sklearn.__version__},
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "metrics.json").write_text(json.dumps({"test": metrics}, indent=2))
    plot_confusion_matrix(
        metrics["confusion_matrix"],
        LABELS,
        out_dir / "confusion_matrix.png",
        f"eGeMAPS forest, test accuracy {metrics['accuracy']:.3f}",
    )
    return ForestRun(out_dir, leaf, metrics)
