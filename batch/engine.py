"""What every engine shares: found files in, report rows out, by one scoring path.

An engine turns the files a run must score into ``(index, row, window rows)`` items, where
``index`` is the file's place in the list it was given. The local engine scores in this
process (:class:`LocalEngine`); the Ray engine (:mod:`ser.batch.ray_engine`) on a cluster's
actors, each through :func:`score_found` and :class:`RowFormat` as here, so that their rows are
identical cell for cell. The driver (:func:`ser.batch.run.run_scoring`) does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ser.batch.discovery import Found
from ser.batch.feature_cache import FileFeatures
from ser.batch.frontends import Frontend, frontend_for
from ser.batch.report import report_row, segment_rows
from ser.batch.scoring import FileScore, prepare_all, score_prepared
from ser.batch.segmentation import Segmentation
from ser.batch.session import ScoringModel, SessionPool

Row = dict[str, str]
Scored = tuple[int, Row, list[Row], "FileFeatures | None"]
"""A file's place in the engine's input, its report row, its window rows, and (speaker mode)
the features its items left for the second pass."""


class Engine(Protocol):
    model: ScoringModel | SessionPool
    """The model as the driver loaded it: its labels, name, hash and metadata make the rows."""

    def rows(self, todo: Sequence[Found], fmt: RowFormat) -> Iterator[Scored]:
        """Every file of ``todo`` once, in any order."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the provenance sidecar records about how the rows were made."""
        ...


@dataclass(frozen=True)
class RowFormat:
    """What turns a file's scores into report rows, the same on every engine."""

    labels: tuple[str, ...]
    model_name: str
    model_sha256: str
    settings: str
    segments: bool = False

    def rows(self, score: FileScore) -> tuple[Row, list[Row]]:
        """The report row of ``score`` and, if asked for, its window rows."""
        row = report_row(score, self.labels, self.model_name, self.model_sha256, self.settings)
        return row, segment_rows(score, self.labels, row) if self.segments else []


def score_found(
    found: Iterable[Found],
    model: ScoringModel | SessionPool,
    *,
    hop: float | None = None,
    batch_size: int = 16,
    workers: int = 2,
    segmentation: Segmentation | None = None,
    features: bool = False,
) -> Iterator[FileScore]:
    """Decode (``workers`` threads) and score files, in input order: the one scoring path.

    Decoding runs one batch per session ahead of the model, so every session has work.
    ``segmentation`` None is the default (``DEFAULT_SEGMENTATION``: ``windows``); ``features``
    keeps each item's frame features for speaker mode.
    """
    ahead = batch_size * getattr(model, "sessions", 1)

    def make_frontend() -> Frontend:
        return frontend_for(model.metadata, hop_s=hop, segmentation=segmentation)

    prepared = prepare_all(found, make_frontend, model.metadata.sample_rate, workers, ahead=ahead)
    return score_prepared(prepared, model, batch_size, features)


class LocalEngine:
    """Scores in this process: decoding threads ahead of one or more ONNX Runtime sessions."""

    def __init__(
        self,
        model: SessionPool,
        *,
        hop: float | None,
        batch_size: int,
        workers: int,
        segmentation: Segmentation | None = None,
        features: bool = False,
    ) -> None:
        self.model = model
        self.hop, self.batch_size, self.workers = hop, batch_size, workers
        self.segmentation = segmentation
        self.features = features  # speaker mode: each file's items' frame features too

    def rows(self, todo: Sequence[Found], fmt: RowFormat) -> Iterator[Scored]:
        scores = score_found(
            todo, self.model, hop=self.hop, batch_size=self.batch_size, workers=self.workers,
            segmentation=self.segmentation, features=self.features,
        )  # fmt: skip
        for index, score in enumerate(scores):
            yield index, *fmt.rows(score), score.features

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "local",
            "sessions": self.model.sessions,
            "threads_per_session": self.model.threads_per_session,
            "decode_workers": self.workers,
            "segmentation": (self.segmentation or Segmentation()).mode,
        }
