"""Each speaker's baseline: the mean of its items' frame features, the same in any order.

Training centres every frame by its speaker's mean frame (:mod:`ser.training.speaker_norm`),
so scoring does the same: a speaker's mean is the sum of the frame features of all its items'
valid frames over their count. Sums run in float64 over items sorted by key, so a row's score
depends on the set of its speaker's items, never on the order, batch size, thread count or
engine that produced them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Item:
    """One scored item (a model input row): the sum of its valid frames' features."""

    key: tuple[str, int]  # (path cell, start sample): unique and sortable
    speaker: str
    frame_sum: np.ndarray  # [members, dim], float64
    frames: int
    seconds: float


@dataclass(frozen=True)
class SpeakerStats:
    """What a speaker's items share: the mean frame their frames are judged against."""

    mean: np.ndarray  # [members, dim], float64
    items: int
    seconds: float

    def to_json(self) -> dict:
        return {"items": self.items, "seconds": round(self.seconds, 3),
                "mean": self.mean.tolist()}  # fmt: skip

    @classmethod
    def from_json(cls, value: Mapping) -> SpeakerStats:
        return cls(np.asarray(value["mean"], dtype=np.float64), int(value["items"]),
                   float(value["seconds"]))  # fmt: skip


def speaker_statistics(items: Iterable[Item]) -> dict[str, SpeakerStats]:
    """Every speaker's statistics over all of its items, each key once (a file listed twice
    is one file's audio, not two)."""
    grouped: dict[str, dict[tuple[str, int], Item]] = defaultdict(dict)
    for item in items:
        grouped[item.speaker].setdefault(item.key, item)
    stats = {}
    for speaker, by_key in grouped.items():
        members = [by_key[key] for key in sorted(by_key)]
        total = np.zeros_like(members[0].frame_sum, dtype=np.float64)
        frames, seconds = 0, 0.0
        for item in members:
            total += item.frame_sum
            frames += item.frames
            seconds += item.seconds
        stats[speaker] = SpeakerStats(total / max(frames, 1), len(members), seconds)
    return stats


def enough(stats: SpeakerStats, min_items: int, min_seconds: float) -> bool:
    """Whether a speaker has the items and seconds its statistics need to be trusted."""
    return stats.items >= min_items and stats.seconds >= min_seconds
