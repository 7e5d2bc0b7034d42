"""Each speaker's feature statistics, the same whatever order their items were scored in.

A speaker's mean and standard deviation come from all of that speaker's items, so a row's
score depends on the set of the speaker's items, never on the order, batch size, thread count
or engine that produced them: items are sorted by their key before anything is summed, and
the sums run in float64.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-5
"""A feature constant over a speaker's items is divided by this, not by zero."""


@dataclass(frozen=True)
class Item:
    """One scored item's encoder features and who speaks in it."""

    key: tuple[str, float]  # (path cell, start second): unique and sortable
    speaker: str
    features: np.ndarray
    seconds: float


@dataclass(frozen=True)
class SpeakerStats:
    """What a speaker's items share: the baseline their features are judged against."""

    mean: np.ndarray
    std: np.ndarray
    items: int
    seconds: float

    def normalise(self, features: np.ndarray) -> np.ndarray:
        """``features`` ``[n, dim]`` standardised by this speaker's statistics (float32)."""
        return ((features - self.mean) / self.std).astype(np.float32)


def speaker_statistics(
    items: Iterable[Item], *, min_items: int = 1, min_seconds: float = 0.0
) -> dict[str, SpeakerStats]:
    """Statistics of every speaker with at least ``min_items`` items and ``min_seconds`` s.

    Speakers with less are left out: their rows use the plain head (the caller says so).
    """
    grouped: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        grouped[item.speaker].append(item)
    stats = {}
    for speaker, members in grouped.items():
        members.sort(key=lambda item: item.key)
        seconds = float(sum(item.seconds for item in members))
        if len(members) < min_items or seconds < min_seconds:
            continue
        stacked = np.stack([item.features for item in members]).astype(np.float64)
        mean = stacked.mean(axis=0)
        std = np.maximum(stacked.std(axis=0), STD_FLOOR)
        stats[speaker] = SpeakerStats(mean, std, len(members), seconds)
    return stats
