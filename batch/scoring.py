"""Scoring one file: decode, build inputs, predict; a failure becomes a result, not a crash."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser.audio import load_audio
from ser.batch.frontends import Frontend
from ser.batch.session import ScoringModel
from ser.errors import SerError


@dataclass(frozen=True)
class Segment:
    """One window of a file and the model's probabilities for it."""

    start_s: float
    end_s: float
    probs: np.ndarray


@dataclass(frozen=True)
class FileScore:
    """A file's outcome: probabilities (mean over its windows) or the reason it failed."""

    path: Path
    duration_s: float | None = None
    probs: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def score_file(path: Path, model: ScoringModel, frontend: Frontend) -> FileScore:
    """Score ``path``; any decoding or model failure is returned as ``FileScore.error``."""
    rate = model.metadata.sample_rate
    try:
        signal = load_audio(path, rate)
        inputs = frontend.inputs(signal)
        probs = model.predict(inputs.rows)
    except SerError as error:
        return FileScore(path, error=_without_path(str(error), path))
    except Exception as error:  # a broken file must never stop the run
        return FileScore(path, error=f"{type(error).__name__}: {' '.join(str(error).split())}")
    segments = [
        Segment(float(start) / rate, float(end) / rate, row)
        for start, end, row in zip(inputs.starts, inputs.ends, probs, strict=True)
    ]
    return FileScore(path, signal.size / rate, probs.mean(axis=0), segments)


def _without_path(message: str, path: Path) -> str:
    """The report already has a path column: drop a leading ``<path>: `` from messages."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
