"""Calibrated confidence: a temperature fitted on validation, and how well confidence matches.

Users threshold on ``confidence`` (the top probability), so it should mean what it says: of the
clips scored 0.8, about 80% right. Temperature scaling (Guo et al. 2017) divides the logits by
one number T fitted to minimise the negative log-likelihood on the validation clips; the argmax,
and so accuracy, never changes. T lives in the exported graph, not in the runner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BINS = 15
_LOG_T_RANGE = (-3.0, 3.0)  # T from 0.05 to 20


@dataclass(frozen=True)
class Reliability:
    """Per-bin confidence and accuracy (equal-width confidence bins), and their ECE."""

    ece: float
    confidence: list[float]
    accuracy: list[float]
    count: list[int]


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The T > 0 that minimises the mean NLL of ``softmax(logits / T)``.

    The NLL is convex in 1/T, so a bounded golden-section search over log T finds the minimum
    reliably without a learning rate to tune.
    """
    logits, targets = logits.double(), targets.long()

    def nll(log_t: float) -> float:
        scaled = logits / float(np.exp(log_t))
        return float(torch.nn.functional.cross_entropy(scaled, targets))

    low, high = _LOG_T_RANGE
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(80):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(np.exp((low + high) / 2))


def reliability(probs: np.ndarray, targets: np.ndarray, bins: int = BINS) -> Reliability:
    """Expected calibration error of the top-class confidence over ``bins`` equal-width bins."""
    probs, targets = np.asarray(probs), np.asarray(targets)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == targets
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    conf, acc, count, ece = [], [], [], 0.0
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        mean_conf = float(confidence[members].mean()) if n else 0.0
        mean_acc = float(correct[members].mean()) if n else 0.0
        ece += n / targets.size * abs(mean_conf - mean_acc)
        count.append(n)
        conf.append(round(mean_conf, 4))
        acc.append(round(mean_acc, 4))
    return Reliability(round(ece, 4), conf, acc, count)
