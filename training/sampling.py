"""Which training clips an epoch draws: balanced over classes, and over corpora if several.

Every mode draws with replacement, ``epoch_draws`` clips an epoch (1.5 x the largest class count
x the number of classes, counted over all corpora together). They differ only when there are
several corpora:

- ``class``: every class equally likely, a class's clips pooled over the corpora, so the larger
  corpus supplies most of every class it has (the single-corpus recipe applied to the union).
- ``corpus-class``: every corpus equally likely, then every class of that corpus. A class that
  only one corpus has is drawn less often than one that every corpus has.
- ``class-corpus``: every class equally likely, then every corpus that has that class, then a
  clip. Classes stay balanced (what UAR rewards) and no corpus drowns another within a class.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLING = ("class-corpus", "corpus-class", "class")


def epoch_draws(targets: torch.Tensor, classes: int) -> int:
    """Samples per epoch: 1.5 x the largest class count x the number of classes."""
    return int(1.5 * np.bincount(targets.cpu().numpy(), minlength=classes).max() * classes)


def draw_weights(targets: np.ndarray, corpora: np.ndarray, mode: str) -> np.ndarray:
    """Probability of drawing each clip, per ``mode`` (see the module's docstring).

    Raises:
        ValueError: for an unknown mode, listing the known ones.
    """
    if mode not in SAMPLING:
        raise ValueError(f"unknown sampling {mode!r}; expected {', '.join(SAMPLING)}")
    cells = _counts(targets, corpora)  # clips per (corpus, class)
    per_cell = cells[corpora, targets]
    if mode == "class":
        weights = 1.0 / cells.sum(axis=0)[targets]
    elif mode == "corpus-class":
        classes_of_corpus = (cells > 0).sum(axis=1)
        weights = 1.0 / (classes_of_corpus[corpora] * per_cell)
    else:
        corpora_of_class = (cells > 0).sum(axis=0)
        weights = 1.0 / (corpora_of_class[targets] * per_cell)
    return weights / weights.sum()


def balanced_indices(
    targets: torch.Tensor,
    classes: int,
    rng: np.random.Generator,
    corpora: torch.Tensor | None = None,
    mode: str = "class-corpus",
    draws: int | None = None,
) -> np.ndarray:
    """An epoch of ``draws`` clip indices (default :func:`epoch_draws`), drawn with replacement
    by ``mode`` (no ``corpora``: one corpus)."""
    targets_np = targets.cpu().numpy()
    corpora_np = np.zeros_like(targets_np) if corpora is None else corpora.cpu().numpy()
    weights = draw_weights(targets_np, corpora_np, mode)
    size = draws or epoch_draws(targets, classes)
    return rng.choice(targets_np.size, size=size, replace=True, p=weights)


def _counts(targets: np.ndarray, corpora: np.ndarray) -> np.ndarray:
    cells = np.zeros((int(corpora.max()) + 1, int(targets.max()) + 1), dtype=np.int64)
    np.add.at(cells, (corpora, targets), 1)
    return cells
