"""ser's Python API: score signals and files with an exported model, from any program.

``ser.load_model`` (also importable from here) returns a :class:`Model`; its ``predict``
scores signals already in memory, its ``score_files`` scores files and object URIs in input
order, with results that convert to the report's rows. It is the path ``ser-batch score``
takes, so the probabilities are the CLI's.

The rest is what an engine needs to score elsewhere and still write the CLI's report:
discovery (:func:`discover`, :class:`Found`), decoding and scoring in the CLI's batches
(:meth:`Model.prepare`, :func:`plan_batches`, :meth:`Model.score`), a decoded file as a record
to ship (:func:`to_record`, :func:`from_record`), report rows (:class:`RowFormat`), the
incremental keys (:func:`found_key`, :func:`row_key`) and the provenance sidecar
(:func:`write_provenance`). Nothing here imports torch.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ser.audio import prepare_signal
from ser.batch.discovery import Found, discover
from ser.batch.engine import RowFormat, score_found
from ser.batch.feature_cache import MemoryFeatures
from ser.batch.frontends import Frontend, check_hop, frontend_for
from ser.batch.incremental import found_key, row_key
from ser.batch.objects import ObjectUri, is_uri
from ser.batch.provenance import write_provenance
from ser.batch.records import from_record, to_record
from ser.batch.scoring import (
    MIN_DURATION_S,
    FileScore,
    Prepared,
    plan_batches,
    prepare_file,
    score_batch,
    score_prepared,
)
from ser.batch.segmentation import DEFAULT_SEGMENTATION, Segmentation
from ser.batch.session import SessionPool
from ser.batch.speaker_mode import (
    SPEAKER_SETTING,
    Rescored,
    SpeakerHead,
    SpeakerSettings,
    rescore_by_speaker,
)
from ser.batch.speakers import speaker_source
from ser.errors import AudioError, ModelError, SerError
from ser.metadata import ModelMetadata
from ser.models import DEFAULT_MODEL

__all__ = [
    "FileResult",
    "Found",
    "Model",
    "Prediction",
    "RowFormat",
    "Segmentation",
    "discover",
    "found_key",
    "from_record",
    "load_model",
    "plan_batches",
    "row_key",
    "to_record",
    "write_provenance",
]


class Prediction:
    """A signal's or file's most likely emotion, its probability, and every class's."""

    __slots__ = ("confidence", "label", "probs")

    def __init__(self, probs: np.ndarray, labels: Sequence[str]) -> None:
        best = int(np.argmax(probs))
        self.label: str = labels[best]
        self.confidence: float = float(probs[best])
        self.probs: dict[str, float] = {
            label: float(p) for label, p in zip(labels, probs, strict=True)
        }

    def __repr__(self) -> str:
        return f"Prediction(label={self.label!r}, confidence={self.confidence:.4f})"


class FileResult:
    """One file's outcome from :meth:`Model.score_files`: a prediction, or the reason it failed.

    :meth:`row` is the file's row in ``ser-batch score``'s report, cell for cell.
    """

    def __init__(self, score: FileScore, fmt: RowFormat, speaker: Rescored | None = None) -> None:
        self._score, self._format, self._speaker = score, fmt, speaker

    @property
    def path(self) -> Path | ObjectUri:
        return self._score.path

    @property
    def ok(self) -> bool:
        return self._score.ok

    @property
    def error(self) -> str:
        """Why the file could not be scored (empty when it was)."""
        return self._score.error

    @property
    def duration_s(self) -> float | None:
        return self._score.duration_s

    @property
    def status(self) -> str:
        """``ok``, ``no_speech`` (the VAD found no speech) or ``error``, as the report says."""
        return self._score.status

    @property
    def speech_s(self) -> float | None:
        """Seconds of speech the VAD found (None with ``windows`` segmentation)."""
        return self._score.speech_s

    @property
    def prediction(self) -> Prediction | None:
        """The file's prediction (None on error or without speech): the mean of its windows,
        each weighted by the audio it covers, or of its speech regions, by their length."""
        probs = self._score.probs if self._speaker is None else self._speaker.probs
        if probs is None:
            return None
        return Prediction(probs, self._format.labels)

    @property
    def speaker(self) -> str | None:
        """Speaker mode: who speaks (most of) the file (None outside speaker mode)."""
        return None if self._speaker is None else self._speaker.row["speaker"]

    @property
    def normalisation(self) -> str | None:
        """Speaker mode: ``speaker``, ``partial`` or ``none`` (see the report's column)."""
        return None if self._speaker is None else self._speaker.row["normalisation"]

    def row(self) -> dict[str, str]:
        """The report row (path, duration, label, probabilities, status, key columns)."""
        if self._speaker is not None:
            return dict(self._speaker.row)
        return self._format.rows(self._score)[0]

    def segment_rows(self) -> list[dict[str, str]]:
        """One row per window, as ``--segments`` writes them."""
        if self._speaker is not None:
            return list(self._speaker.segment_rows)
        return RowFormat(**{**vars(self._format), "segments": True}).rows(self._score)[1]

    def __repr__(self) -> str:
        outcome = repr(self.prediction) if self.ok else f"error={self.error!r}"
        return f"FileResult({str(self.path)!r}, {outcome})"


class Model:
    """An exported model, loaded once, ready for signals and files (see :func:`load_model`)."""

    def __init__(
        self,
        pool: SessionPool,
        *,
        hop: float | None = None,
        segmentation: Segmentation | None = None,
    ) -> None:
        self._pool, self.hop = pool, hop
        self.segmentation = segmentation or Segmentation()
        self._local = threading.local()
        settings = self._frontend().settings  # fails now on a model it cannot feed
        self._format = RowFormat(pool.labels, pool.name, pool.sha256, settings)

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names, in the order of the probabilities."""
        return self._pool.labels

    @property
    def metadata(self) -> ModelMetadata:
        """The contract the model file carries (sample rate, window, frontend...)."""
        return self._pool.metadata

    @property
    def sha256(self) -> str:
        return self._pool.sha256

    @property
    def path(self) -> Path:
        """The model file."""
        return self._pool.path

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider the sessions run on."""
        return self._pool.provider

    @property
    def settings(self) -> str:
        """The ``settings`` cell of this model's rows (frontend and segmentation): with
        :attr:`sha256`, what an incremental key needs (:func:`~ser.batch.incremental.found_key`)."""
        return self._format.settings

    @property
    def pool(self) -> SessionPool:
        """The model's ONNX Runtime sessions (what ``ser.batch.scoring`` functions take)."""
        return self._pool

    def predict(
        self, signal: np.ndarray | Sequence[np.ndarray], sample_rate: int, *, batch_size: int = 16
    ) -> Prediction | list[Prediction | None] | None:
        """Score one signal, or a sequence of signals (one prediction each, in order).

        A signal is ``[samples]`` or ``[samples, channels]`` at ``sample_rate``; it is mixed to
        mono, resampled and segmented as files are, so its probabilities are those a file with
        the same samples gets in the report. With ``vad`` segmentation a signal without speech
        gives None.

        Raises:
            AudioError: for an empty, non-finite or too short signal (under 0.1 s).
            ModelError: when the model fails on the signals.
            ValueError: for a batch size under 1.
        """
        many = not isinstance(signal, np.ndarray)
        signals = list(signal) if many else [signal]
        rate = self.metadata.sample_rate
        prepared = []
        for index, samples in enumerate(signals):
            mono = prepare_signal(samples, sample_rate, rate)
            if mono.size < MIN_DURATION_S * rate:
                raise AudioError(f"signal {index}: too short to score (under {MIN_DURATION_S} s)")
            found = Found(Path(f"<signal {index}>"))
            prepared.append(Prepared(found, mono.size, self._frontend().inputs(mono)))
        scores = list(score_prepared(prepared, self._pool, _at_least_one(batch_size, "batch_size")))
        failed = next((score.error for score in scores if score.error), None)
        if failed:  # None is kept for a signal without speech, never for a failure
            raise ModelError(failed)
        predictions = [
            None if score.probs is None else Prediction(score.probs, self.labels)
            for score in scores
        ]
        return predictions if many else predictions[0]

    def score_files(
        self,
        paths: Iterable[str | Path],
        *,
        batch_size: int = 16,
        workers: int = 2,
        speakers: str | Path | Mapping[str | Path, str] | None = None,
        speaker_min_items: int | None = None,
        speaker_min_seconds: float | None = None,
    ) -> Iterator[FileResult]:
        """Score files (local paths or object URIs such as ``s3://bucket/key``), in input order.

        Decoding runs in ``workers`` threads ahead of the model; a file that cannot be scored
        (an object store that cannot be reached too) gives a result with ``error`` set, never
        an exception. Bad arguments (one path instead of a list, a batch size under 1) raise
        TypeError or ValueError at once.

        ``speakers`` turns on speaker mode (a model with a speaker head): ``"folder"``, a
        ``path,speaker`` CSV or an RTTM file, or a mapping of path to speaker, as
        ``ser-batch score --speaker-from/--speakers``. Every file is scored before the first
        result is given, since each speaker's statistics come from all of its files.
        """
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("score_files takes a list (or iterable) of paths, not one path")
        batch_size = _at_least_one(batch_size, "batch_size")
        if workers < 0:
            raise ValueError(f"workers must not be negative, got {workers}")
        found = (_found(path) for path in paths)
        # speaker mode scores every region alone, as ``ser-batch score`` does
        segmentation = self.segmentation if speakers is None else self.segmentation.alone()
        scores = score_found(
            found, self._pool, hop=self.hop, batch_size=batch_size, workers=workers,
            segmentation=segmentation, features=speakers is not None,
        )  # fmt: skip
        if speakers is None:
            for score in scores:
                yield FileResult(score, self._format)
            return
        frontend = frontend_for(self.metadata, hop_s=self.hop, segmentation=segmentation)
        fmt = replace(self._format, settings=frontend.settings + SPEAKER_SETTING)
        yield from self._by_speaker(
            list(scores), fmt, speakers, speaker_min_items, speaker_min_seconds
        )

    def _by_speaker(
        self, scores, fmt: RowFormat, speakers, min_items, min_seconds
    ) -> Iterator[FileResult]:
        head = SpeakerHead(self.metadata, self._pool.name)
        settings = SpeakerSettings.for_head(
            head, speaker_source(speakers), min_items=min_items, min_seconds=min_seconds
        )
        cache = MemoryFeatures()
        rows = []
        for score in scores:
            row = fmt.rows(score)[0]
            if score.features is not None:
                cache.put(row_key(row), score.features)
            rows.append(row)
        rescored, _ = rescore_by_speaker(
            rows, cache, head, settings, labels=self.labels, sample_rate=self.metadata.sample_rate
        )
        for score, outcome in zip(scores, rescored, strict=True):
            yield FileResult(replace(score, features=None), fmt, outcome)

    def prepare(self, found: Found) -> Prepared:
        """A file decoded into this model's inputs, or the reason it cannot be (an engine's
        first step; a file over a minute is left to stream when it is scored)."""
        return prepare_file(found, self._frontend(), self.metadata.sample_rate)

    def score(self, batch: Sequence[Prepared]) -> list[FileResult]:
        """Score prepared files as one batch of :func:`plan_batches` (in its order)."""
        return [FileResult(score, self._format) for score in score_batch(list(batch), self._pool)]

    def _frontend(self) -> Frontend:
        """This thread's frontend (openSMILE's extractor is not shared between threads)."""
        if not hasattr(self._local, "frontend"):
            self._local.frontend = frontend_for(
                self.metadata, hop_s=self.hop, segmentation=self.segmentation
            )
        return self._local.frontend


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    threads: int | None = None,
    sessions: int | None = None,
    hop: float | None = None,
    segmentation: str | Segmentation = DEFAULT_SEGMENTATION,
) -> Model:
    """Load a shipped model by name (``whisper-pooled``, ``forest``) or an exported ``.onnx``.

    Args:
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA where ONNX Runtime can use it).
        threads: ONNX Runtime threads in all (default: every core), split among the sessions.
        sessions: parallel sessions (default as ``ser-batch score``: one per core on the CPU).
        hop: window hop in seconds for windowed models (default: the model's).
        segmentation: ``vad`` (speech regions only) or ``windows``, as ``ser-batch score
            --segmentation``; a :class:`~ser.batch.segmentation.Segmentation` sets the VAD too.

    Raises:
        ModelError: when the model cannot be found or loaded, or lacks ser's metadata.
        ValueError: for threads or sessions under 1, or a hop under 0.01 s or longer than the
            model's window.
    """
    for name, value in (("threads", threads), ("sessions", sessions)):
        if value is not None:
            _at_least_one(value, name)
    check_hop(hop)
    if isinstance(segmentation, str):
        segmentation = Segmentation(segmentation)
    pool = SessionPool(name_or_path, device=device, threads=threads, sessions=sessions)
    return Model(pool, hop=hop, segmentation=segmentation)  # its frontend checks the hop


def _at_least_one(value: int, name: str) -> int:
    """``value`` if it is a whole number of at least 1, as the CLI's ranges require."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    return value


def _found(path: str | Path) -> Found:
    """:meth:`Found.of`, with a store that cannot be reached as the file's error."""
    try:
        return Found.of(path)
    except SerError as error:
        return Found(ObjectUri(str(path)) if is_uri(path) else Path(path), str(error))
