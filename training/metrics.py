"""Evaluation figures every model reports: accuracy, UAR, per-class F1, confusion matrix."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, object]:
    """Metrics as a JSON-ready dict; ``uar`` is the unweighted average recall over classes.

    ``uar`` averages over the classes present in ``y_true``: a corpus without calm is not scored
    on calm, though a prediction of calm on it still counts as an error.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = list(range(len(labels)))
    f1 = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "n": int(y_true.size),
        "accuracy": round(float((y_true == y_pred).mean()), 4),
        "uar": round(uar(y_true, y_pred), 4),
        "f1": {label: round(float(score), 4) for label, score in zip(labels, f1, strict=True)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
        "labels": list(labels),
    }


def uar(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted average recall over the classes present in ``y_true``."""
    with warnings.catch_warnings():  # predicting a class the corpus lacks is an error, not news
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return float(balanced_accuracy_score(y_true, y_pred))
