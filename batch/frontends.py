"""From a decoded signal to the inputs a model expects, as its metadata says.

``egemaps`` models take one 88-feature row per file; ``waveform`` models take windows of raw
16 kHz samples, ``window_s`` long every ``hop_s``, the last one zero-padded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ser.audio import SAMPLE_RATE, center_window, split_windows
from ser.batch.segmentation import Segmentation
from ser.errors import ModelError
from ser.features import EgemapsExtractor
from ser.metadata import ModelMetadata


@dataclass(frozen=True)
class ModelInputs:
    """A file's model inputs ``[n, ...]`` and the time span, in samples, each row covers.

    With ``--segmentation vad`` (:mod:`ser.batch.utterances`) rows belong to speech regions:
    ``regions`` ``[k, 2]`` holds their spans, ``region_of_row`` each row's region, and the
    last chunk of a file gives its length in ``samples``.
    """

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    regions: np.ndarray | None = None
    region_of_row: np.ndarray | None = None
    samples: int | None = None


class Frontend(Protocol):
    settings: str
    """What, beside the model file, decides a file's rows (part of the incremental key)."""

    def inputs(self, signal: np.ndarray) -> ModelInputs: ...


class EgemapsFrontend:
    """One eGeMAPS row for the whole file."""

    def __init__(self, metadata: ModelMetadata) -> None:
        self.extractor = EgemapsExtractor()
        expected = metadata.extra_json("feature_names")
        if expected is not None and list(expected) != self.extractor.feature_names:
            raise ModelError(
                "the model was trained on other eGeMAPS features than this openSMILE "
                f"{self.extractor.version} computes"
            )
        self.settings = f"egemaps opensmile={self.extractor.version}"

    def inputs(self, signal: np.ndarray) -> ModelInputs:
        features = self.extractor.extract(signal)[None, :]
        return ModelInputs(features, np.zeros(1, np.int64), np.array([signal.size]))


MIN_HOP_S = 0.01


def check_hop(hop_s: float | None, window_s: float | None = None) -> float | None:
    """``hop_s`` if it is a usable hop (None: the model's own), the one rule the CLI, the API
    and the frontend apply; with the model's ``window_s``, also no longer than the window.

    Raises:
        ValueError: for a hop that is not a finite number of at least :data:`MIN_HOP_S` s, or
            one longer than the window (the audio between windows would go unscored).
    """
    if hop_s is None:
        return None
    if not math.isfinite(hop_s):
        raise ValueError(f"the hop {hop_s} is not a finite number")
    if hop_s < MIN_HOP_S:
        raise ValueError(f"the hop must be at least {MIN_HOP_S} s, got {hop_s}")
    if window_s and round(hop_s * SAMPLE_RATE) > round(window_s * SAMPLE_RATE):
        raise ValueError(
            f"the hop ({hop_s:g} s) must not exceed the model's window ({window_s:g} s): the "
            "audio between windows would go unscored"
        )
    return hop_s


class WaveformFrontend:
    """Windows of raw samples; ``hop_s`` overrides the model's own hop.

    A file up to 1.5 windows long is one centred window (cropped or zero-padded): exactly what
    training evaluated on, so a model's recorded metrics hold for clips scored here. Longer files
    are cut into windows every hop, the last one zero-padded.
    """

    single_window_up_to = 1.5

    def __init__(self, metadata: ModelMetadata, hop_s: float | None = None) -> None:
        if not metadata.window_s:
            raise ModelError("a waveform model needs window_s in its metadata")
        self.metadata = metadata
        self.window = round(metadata.window_s * metadata.sample_rate)
        self.single_limit = int(self.single_window_up_to * self.window)
        hop_s = check_hop(hop_s, metadata.window_s) or metadata.hop_s or metadata.window_s
        self.hop = max(1, round(hop_s * metadata.sample_rate))
        self.settings = f"window={self.window} hop={self.hop}"

    def inputs(self, signal: np.ndarray) -> ModelInputs:
        if signal.size <= self.single_limit:
            start = max(0, (signal.size - self.window) // 2)
            row = center_window(signal, self.window)[None, :]
            end = min(signal.size, start + self.window)
            return ModelInputs(row, np.array([start]), np.array([end]))
        windows, starts = split_windows(signal, self.window, self.hop)
        ends = np.minimum(starts + self.window, signal.size)
        return ModelInputs(windows, starts, ends)

    def stream_inputs(
        self, blocks: Iterable[np.ndarray], chunk_windows: int = 32
    ) -> Iterator[ModelInputs]:
        """The windows of :meth:`inputs`, from a stream of sample blocks, a chunk at a time.

        Only the samples not yet covered by an emitted window are buffered, so memory is one
        block plus one chunk of windows, whatever the length of the stream.
        """
        buffer, offset, next_start, total = np.zeros(0, np.float32), 0, 0, 0
        rows: list[np.ndarray] = []
        starts: list[int] = []
        for block in blocks:
            buffer = np.concatenate([buffer, block])
            total += block.size
            while next_start + self.window <= total and total > self.single_limit:
                rows.append(buffer[next_start - offset : next_start - offset + self.window])
                starts.append(next_start)
                next_start += self.hop
                if len(rows) >= chunk_windows:
                    yield self._chunk(rows, starts, total)
                    rows, starts = [], []
            keep_from = min(next_start, total) - offset
            buffer, offset = buffer[keep_from:].copy(), offset + keep_from
        if total <= self.single_limit:
            yield self.inputs(buffer)
            return
        last = (
            int(np.ceil((total - self.window) / self.hop)) * self.hop if total > self.window else 0
        )
        while next_start <= last:
            row = np.zeros(self.window, np.float32)
            tail = buffer[next_start - offset : next_start - offset + self.window]
            row[: tail.size] = tail
            rows.append(row)
            starts.append(next_start)
            next_start += self.hop
        if rows:
            yield self._chunk(rows, starts, total)

    def _chunk(self, rows: list[np.ndarray], starts: list[int], total: int) -> ModelInputs:
        begin = np.array(starts, dtype=np.int64)
        return ModelInputs(np.stack(rows), begin, np.minimum(begin + self.window, total))


def frontend_for(
    metadata: ModelMetadata, *, hop_s: float | None = None, segmentation: Segmentation | None = None
) -> Frontend:
    """The frontend the model's metadata asks for; with ``vad`` segmentation, over speech only.

    ``segmentation`` None means the default (:data:`ser.batch.segmentation.DEFAULT_SEGMENTATION`).
    """
    segmentation = segmentation or Segmentation()
    inner = EgemapsFrontend(metadata) if metadata.frontend == "egemaps" else None
    inner = inner or WaveformFrontend(metadata, hop_s)
    if not segmentation.vad:
        return inner
    from ser.batch.utterances import SpeechFrontend  # imports the VAD only when it is used

    return SpeechFrontend(inner, segmentation)
