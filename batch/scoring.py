"""Scoring files: decode, build model inputs, predict in batches that span files.

A file that cannot be decoded or featurised becomes a :class:`FileScore` with ``error`` set, in
its place in the output order; it never stops the run.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from ser.audio import AudioFile, stream_audio
from ser.batch.discovery import Found
from ser.batch.feature_cache import FileFeatures
from ser.batch.frontends import Frontend, ModelInputs, WaveformFrontend
from ser.batch.objects import is_uri, local_copy
from ser.batch.session import ScoringModel
from ser.errors import AudioError, SerError


@dataclass(frozen=True)
class Segment:
    """One window of a file and the model's probabilities for it."""

    start_s: float
    end_s: float
    probs: np.ndarray


@dataclass(frozen=True)
class FileScore:
    """A file's outcome or the reason it failed.

    With ``windows`` segmentation ``probs`` is the mean over the file's windows, each weighted
    by the audio it covers, so a short zero-padded tail counts for what it holds, and
    ``segments`` are the windows. With ``vad`` the segments are the speech regions (each the
    weighted mean of its windows), ``probs`` their mean weighted by their length, and
    ``speech_s`` their total length; a file without speech has no ``probs``.
    """

    found: Found
    duration_s: float | None = None
    probs: np.ndarray | None = None
    segments: list[Segment] = field(default_factory=list)
    error: str = ""
    speech_s: float | None = None
    features: FileFeatures | None = None  # kept for speaker mode

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def status(self) -> str:
        """``ok``, ``no_speech`` (scored; the VAD found no speech) or ``error``."""
        if self.error:
            return "error"
        return "no_speech" if self.probs is None else "ok"

    @property
    def path(self) -> Path:
        return self.found.path


@dataclass(frozen=True)
class Prepared:
    """A decoded file's model inputs, or the reason it has none.

    A long file for a windowed model is not decoded here: ``stream`` yields its inputs chunk by
    chunk when it is scored, so memory does not grow with its length.
    """

    found: Found
    samples: int = 0
    inputs: ModelInputs | None = None
    error: str = ""
    stream: Callable[[], Iterator[ModelInputs]] | None = None


STREAM_ABOVE_S = 60.0
MIN_DURATION_S = 0.1


def prepare_file(found: Found, frontend: Frontend, sample_rate: int) -> Prepared:
    """Decode and featurise one file; every failure is caught and described in one line."""
    if found.error:
        return Prepared(found, error=found.error)
    if is_uri(found.path):
        return _prepare_object(found, frontend, sample_rate)
    try:
        with AudioFile(found.path) as audio:  # one open: header, duration and samples
            if _streams(frontend) and audio.duration() > STREAM_ABOVE_S:
                return streamed(found, frontend, sample_rate)
            signal = audio.read(sample_rate)
        if signal.size < MIN_DURATION_S * sample_rate:
            seconds = signal.size / sample_rate
            return Prepared(
                found, error=f"too short to score ({seconds:.3f} s, under {MIN_DURATION_S} s)"
            )
        return Prepared(found, signal.size, frontend.inputs(signal))
    except Exception as error:  # a broken file must never stop the run
        return Prepared(found, error=_failure(error, found.path))


def _prepare_object(found: Found, frontend: Frontend, sample_rate: int) -> Prepared:
    """An object decoded from a local copy; a long one is fetched again when it is scored."""
    try:
        with local_copy(found.path) as local:
            prepared = prepare_file(replace(found, path=local), frontend, sample_rate)
    except OSError as error:
        return Prepared(found, error=f"cannot read object ({' '.join(str(error).split())[:300]})")
    if prepared.stream is not None:
        return streamed(found, frontend, sample_rate)
    return replace(prepared, found=found)


def streamed(found: Found, frontend: WaveformFrontend, sample_rate: int) -> Prepared:
    """A long file, left to be decoded block by block when it is scored."""
    if is_uri(found.path):  # fetched again then: a local copy of hours of audio is not kept
        return Prepared(found, stream=partial(_stream_object, found.path, frontend, sample_rate))
    blocks = partial(stream_audio, found.path, sample_rate)
    return Prepared(found, stream=lambda: frontend.stream_inputs(blocks()))


def _streams(frontend: Frontend) -> bool:
    """Whether the frontend takes a file block by block (windows, or speech regions)."""
    return isinstance(frontend, WaveformFrontend) or hasattr(frontend, "stream_inputs")


def _stream_object(uri: str, frontend: WaveformFrontend, sample_rate: int) -> Iterator[ModelInputs]:
    with local_copy(uri) as local:
        try:
            yield from frontend.stream_inputs(stream_audio(local, sample_rate))
        except AudioError as error:  # said of the copy: name nothing, the row names the object
            raise AudioError(str(error).removeprefix(f"{local}: ")) from None


def prepare_all(
    found: Iterable[Found],
    make_frontend: Callable[[], Frontend],
    sample_rate: int,
    workers: int = 1,
    ahead: int = 0,
) -> Iterator[Prepared]:
    """Decode and featurise files in ``workers`` threads, yielding in input order.

    At most ``ahead + 2 x workers`` files are in flight, so memory stays bounded however many
    files there are (a file over ``STREAM_ABOVE_S`` holds no samples until it is scored). The
    caller passes its batch size as ``ahead``: while it runs the model on one batch, the
    threads decode the next one. Decoding, resampling and openSMILE release the GIL, so the
    threads overlap with inference. Each thread has its own frontend.
    """
    if workers <= 1:
        frontend = make_frontend()
        for item in found:
            yield prepare_file(item, frontend, sample_rate)
        return
    local = threading.local()

    def work(item: Found) -> Prepared:
        if not hasattr(local, "frontend"):
            local.frontend = make_frontend()
        return prepare_file(item, local.frontend, sample_rate)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-decode") as pool:
        in_flight: deque = deque()
        try:
            for item in found:
                in_flight.append(pool.submit(work, item))
                if len(in_flight) >= ahead + 2 * workers:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:  # a run that stops early (a signal, a full disk) waits for no queued file
            for future in in_flight:
                future.cancel()


def plan_batches(prepared: Iterable[Prepared], batch_size: int = 16) -> Iterator[list[Prepared]]:
    """Group prepared files, in input order, into the batches :func:`score_prepared` runs.

    Files join a batch until it holds at least ``batch_size`` model inputs (a file is never
    split); a streamed file is a batch of its own; a file that failed rides along with its
    neighbours. An engine that ships work elsewhere can ship these groups: since exported
    models are batch-invariant, any grouping gives the same scores, and this one gives the
    same batches as ``ser-batch score``.
    """
    pending: list[Prepared] = []
    rows = 0
    for item in prepared:
        if item.stream is not None:
            if pending:
                yield pending
            pending, rows = [], 0
            yield [item]
            continue
        pending.append(item)
        rows += len(item.inputs.rows) if item.inputs is not None else 0
        if rows >= batch_size:
            yield pending
            pending, rows = [], 0
    if pending:
        yield pending


def score_batch(
    batch: list[Prepared], model: ScoringModel, batch_size: int = 16, features: bool = False,
    stop: threading.Event | None = None,
) -> list[FileScore]:  # fmt: skip
    """Scores of one batch from :func:`plan_batches`, in its order (``features``: with the
    items' frame features for speaker mode). A long file stops at its next chunk once ``stop``
    is set (its score is then an error no one reads: the run is ending)."""
    if len(batch) == 1 and batch[0].stream is not None:
        return [_score_stream(batch[0], model, batch_size, features, stop)]
    return list(_flush(batch, model, batch_size, features))


def score_prepared(
    prepared: Iterable[Prepared], model: ScoringModel, batch_size: int = 16, features: bool = False
) -> Iterator[FileScore]:
    """Run the model over prepared files, batching rows across files; results keep input order.

    A model with several sessions (``model.sessions``, see ``ser.batch.session.SessionPool``)
    gets whole batches in parallel, one per session, plus one queued; results still come in
    input order.
    """
    batches = plan_batches(prepared, batch_size)
    sessions = getattr(model, "sessions", 1)
    if sessions <= 1:
        for batch in batches:
            yield from score_batch(batch, model, batch_size, features)
        return
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="ser-session") as pool:
        in_flight: deque = deque()
        try:
            for batch in batches:
                in_flight.append(pool.submit(score_batch, batch, model, batch_size, features, stop))
                if len(in_flight) > sessions:
                    yield from in_flight.popleft().result()
            while in_flight:
                yield from in_flight.popleft().result()
        finally:  # stopped early: queued batches are dropped, running ones finish, but a
            stop.set()  # long file (hours, one batch) stops at its next chunk
            for future in in_flight:
                future.cancel()


def score_file(path: Path, model: ScoringModel, frontend: Frontend) -> FileScore:
    """Score one file (the single-file form of :func:`score_prepared`)."""
    prepared = prepare_file(Found.of(path), frontend, model.metadata.sample_rate)
    return score_batch([prepared], model)[0]


def _flush(
    pending: list[Prepared], model: ScoringModel, batch_size: int, features: bool
) -> Iterator[FileScore]:
    ready = [item for item in pending if item.inputs is not None and len(item.inputs.rows)]
    probs, extra = iter(()), None
    if ready:
        stacked = np.concatenate([item.inputs.rows for item in ready])
        try:
            all_probs, extra = _predict(model, stacked, batch_size, features)
            probs = iter(all_probs)
        except Exception as error:  # a model failure on this batch fails its files, not the run
            reason = f"model failed: {' '.join(str(error).split())[:300]}"
            pending = [
                Prepared(i.found, error=reason) if i.inputs is not None and len(i.inputs.rows)
                else i
                for i in pending
            ]  # fmt: skip
    rate = model.metadata.sample_rate
    done = 0
    for item in pending:
        if item.inputs is None:
            yield FileScore(item.found, error=item.error)
            continue
        count = len(item.inputs.rows)
        file_probs = np.stack([next(probs) for _ in range(count)]) if count else np.zeros((0, 0))
        totals = _Totals()
        segments = totals.add(item.inputs, file_probs, rate)
        score = totals.score(item.found, item.samples / rate, segments, rate)
        if extra is not None:
            rows = slice(done, done + count)
            features = _file_features(item.inputs, file_probs, extra, rows, item.samples)
            score = replace(score, features=features)
        done += count
        yield score


def _file_features(
    inputs: ModelInputs,
    probs: np.ndarray,
    extra: tuple[np.ndarray, np.ndarray],
    rows: slice,
    samples: int,
) -> FileFeatures:
    frames, valid = extra
    return FileFeatures(
        frames[rows], valid[rows], probs.astype(np.float32), inputs.starts, inputs.ends,
        samples, inputs.regions, inputs.region_of_row,
    )  # fmt: skip


def aggregate(
    inputs: ModelInputs, probs: np.ndarray, rate: int
) -> tuple[np.ndarray | None, list[Segment], float | None]:
    """A whole file's rows aggregated as scoring does: its probabilities (None without
    speech), its segments and its seconds of speech (None without vad)."""
    totals = _Totals()
    segments = totals.add(inputs, probs, rate)
    file_probs, speech_s = totals.result(rate)
    return file_probs, segments, speech_s


class _Totals:
    """A file's running sums: window (or region) probabilities times their weights."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.weight = 0.0
        self.speech: int | None = None

    def add(self, inputs: ModelInputs, probs: np.ndarray, rate: int) -> list[Segment]:
        """Add one chunk's rows; returns its segments (windows, or speech regions)."""
        weights = np.maximum(inputs.ends - inputs.starts, 1).astype(np.float64)
        if inputs.regions is None:
            if len(probs):
                part = (probs * weights[:, None]).sum(axis=0)
                self.total = part if self.total is None else self.total + part
                self.weight += weights.sum()
            return _segments(inputs, probs, rate)
        self.speech = self.speech or 0
        segments = []
        for index, (start, end) in enumerate(inputs.regions.tolist()):
            mine = inputs.region_of_row == index
            mean = (probs[mine] * weights[mine, None]).sum(axis=0) / weights[mine].sum()
            length = float(end - start)  # region by region, in order: any chunking, same sums
            self.total = length * mean if self.total is None else self.total + length * mean
            self.weight += length
            self.speech += end - start
            segments.append(Segment(start / rate, end / rate, mean.astype(np.float32)))
        return segments

    def result(self, rate: int) -> tuple[np.ndarray | None, float | None]:
        """The file's probabilities (None without speech) and seconds of speech (None
        without vad)."""
        probs = None if self.total is None else (self.total / self.weight).astype(np.float32)
        return probs, None if self.speech is None else self.speech / rate

    def score(
        self, found: Found, duration_s: float, segments: list[Segment], rate: int
    ) -> FileScore:
        probs, speech_s = self.result(rate)
        return FileScore(found, duration_s, probs, segments, speech_s=speech_s)


def _predict(
    model: ScoringModel, rows: np.ndarray, batch_size: int, features: bool = False
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """Probabilities of ``rows``, and with ``features`` (speaker mode) each row's frame
    features (float16) and valid-frame mask."""
    batches = [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
    if not features:
        return np.concatenate([model.predict(batch) for batch in batches]), None
    parts = [model.predict_features(batch) for batch in batches]
    probs, frames, valid = (np.concatenate([part[k] for part in parts]) for k in range(3))
    return probs, (frames, valid)


def _segments(inputs: ModelInputs, probs: np.ndarray, rate: int) -> list[Segment]:
    return [
        Segment(float(start) / rate, float(end) / rate, row)
        for start, end, row in zip(inputs.starts, inputs.ends, probs, strict=True)
    ]


def _score_stream(
    item: Prepared, model: ScoringModel, batch_size: int, features: bool,
    stop: threading.Event | None = None,
) -> FileScore:  # fmt: skip
    """Score a long file chunk by chunk: running weighted sums, never the whole file."""
    rate = model.metadata.sample_rate
    totals, samples, segments, kept = _Totals(), 0, [], []
    try:
        for chunk in item.stream():
            if stop is not None and stop.is_set():
                return FileScore(item.found, error="abandoned: the run was stopped")
            probs, extra = chunk.rows, None
            if len(chunk.rows):
                probs, extra = _predict(model, chunk.rows, batch_size, features)
            segments += totals.add(chunk, probs, rate)
            if extra is not None:
                kept.append(_file_features(chunk, probs, extra, slice(None), 0))
            if chunk.samples is not None:
                samples = chunk.samples
            elif len(chunk.ends):
                samples = max(samples, int(chunk.ends.max()))
    except Exception as error:  # a broken file must never stop the run
        return FileScore(item.found, error=_failure(error, item.found.path))
    score = totals.score(item.found, samples / rate, segments, rate)
    if kept:
        score = replace(score, features=FileFeatures.join(kept, samples))
    return score


def _failure(error: Exception, path: Path) -> str:
    """One line for the report's error column (which sits beside the path column).

    ser's own errors are already one line, less their leading ``<path>: ``; anything else is
    unexpected and keeps its type name.
    """
    if isinstance(error, SerError):
        message, prefix = str(error), f"{path}: "
        return message[len(prefix) :] if message.startswith(prefix) else message
    return f"{type(error).__name__}: {' '.join(str(error).split())}"
