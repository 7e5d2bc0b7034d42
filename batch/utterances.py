"""``--segmentation vad``: model inputs for the speech regions of a recording, block by block.

A recording up to 1.5 windows long (a clip) in which the VAD finds speech is one utterance,
from its first speech to its last, scored on the window the model scores any clip on (centred
on the clip, as training evaluated and as ``windows`` scores it): a clip keeps the model's
measured accuracy whatever pauses it holds. In a longer recording, a region up to 1.5 windows
long is one window centred on it: the region with up to ``context_s`` (1 s) of the recording on
each side, never past the middle of the pause before or after (never a neighbour's speech),
zero-padded beyond. The model pools over every frame that is not zero padding, and it was
trained on clips with about 1 s of near-silence around the speech: the region alone scores far
lower (validation, README "Segmentation"). Neighbouring regions that look like one sentence
cut at a pause inside it (``--vad-sentence-pause``: a pause under 1 s, one of the two under
1.2 s, together within one window) are scored as one such region, from the first one's start
to the last one's end, and each of them gets that row: the parts of a sentence score far worse
alone. A longer region is cut into windows of its own samples every hop, the last one
zero-padded. An eGeMAPS model gets one feature row per region (never joined); a region too
short for openSMILE to measure (under about 0.08 s, possible only with ``--vad-min-speech`` and
``--vad-pad`` near 0) is left out, as regions under the minimum are.

Each row's ``starts``/``ends`` are the part of its region it covers (its weight within the
region); ``regions`` and ``region_of_row`` say which region a row belongs to. A sentence is
emitted once no later region can join it and its context is final, so only the audio from the
earliest region still pending is held, however long the file: at most about two
``--vad-max-speech`` regions and their context, since a finished region waits for the next one
while that one is still open.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ser.audio import center_window, split_windows
from ser.batch.frontends import EgemapsFrontend, ModelInputs, WaveformFrontend
from ser.batch.segmentation import (
    SAMPLE_RATE,
    Region,
    Segmentation,
    SpeechTracker,
    extend_sentences,
)
from ser.errors import AudioError
from ser.vad import SileroVad


class SpeechFrontend:
    """Speech regions found by the VAD, then the inner frontend's rows for each region."""

    def __init__(
        self, inner: WaveformFrontend | EgemapsFrontend, segmentation: Segmentation
    ) -> None:
        window = getattr(inner, "window", 0)
        if isinstance(inner, WaveformFrontend):  # the sentence pause settled for this model
            segmentation = segmentation.for_model(inner.metadata)
        else:  # an eGeMAPS model: no window to fit a sentence in
            segmentation = segmentation.alone()
        self.inner, self.segmentation = inner, segmentation
        self.vad = SileroVad()
        self.settings = f"{inner.settings} {segmentation.describe(self.vad.sha256)}"
        # the recording a short region's window shows on either side of it (at most half a window)
        self.context = min(window // 2, round(segmentation.context_s * SAMPLE_RATE))
        self.clip_limit = getattr(inner, "single_limit", 0)
        self.sentence = (segmentation.sentence_pause, window, segmentation.sentence_part)
        # after a sentence's end, how far the VAD must have settled before it is final: a
        # sentence pause on, no later region can join it; 2 contexts on, the middle of the
        # pause lies past its right context
        self.wait = max(2 * self.context, segmentation.sentence_pause)

    def inputs(self, signal: np.ndarray) -> ModelInputs:
        """All of a decoded signal's rows: exactly the chunks :meth:`stream_inputs` yields."""
        return merge_inputs(list(self.stream_inputs([signal])))

    def stream_inputs(self, blocks: Iterable[np.ndarray]) -> Iterator[ModelInputs]:
        """Rows region by region as the blocks arrive; the last chunk says the total length."""
        vad = self.vad.stream(self.segmentation.refresh_frames)
        tracker = SpeechTracker(self.segmentation)
        buffer, offset, total = np.zeros(0, np.float32), 0, 0
        pending: list[list[Region]] = []  # sentences not emitted yet (the last may still grow)
        previous_end = 0  # end of the last emitted sentence: where the left context may start
        for block in blocks:
            block = np.asarray(block, np.float32)
            buffer = np.concatenate([buffer, block])
            total += block.size
            self._extend(pending, tracker.feed(vad.feed(block)))
            if total <= self.clip_limit:
                continue  # still a clip: scored whole at the end, so every sample is kept
            ready = self._ready(pending, tracker.settled)
            if ready:
                pending = pending[len(ready) :]
                yield self._rows(ready, pending, buffer, offset, previous_end, total, final=False)
                previous_end = ready[-1][-1].end
            keep_from = self._keep_from(pending, previous_end, tracker.settled, total)
            buffer, offset = buffer[keep_from - offset :].copy(), keep_from
        self._extend(pending, tracker.feed(vad.finish()))
        self._extend(pending, tracker.finish(total))
        if total <= self.clip_limit and pending:
            yield self._clip(buffer, Region(pending[0][0].start, pending[-1][-1].end))
            return
        yield self._rows(pending, [], buffer, offset, previous_end, total, final=True)

    def region_inputs(self, signal: np.ndarray, regions: Iterable[Region]) -> ModelInputs:
        """The rows :meth:`stream_inputs` gives a recording longer than a clip, for speech
        regions given instead of found (in order, not overlapping): joined into sentences,
        with their context, as the VAD's own. For measurements that score other regions (the
        true utterance spans of a benchmark) exactly as ``ser-batch`` scores the VAD's."""
        sentences = extend_sentences([], regions, *self.sentence)
        return self._rows(sentences, [], signal, 0, 0, signal.size, final=True)

    def _extend(self, pending: list[list[Region]], regions: list[Region]) -> None:
        extend_sentences(pending, regions, *self.sentence)

    def _clip(self, signal: np.ndarray, speech: Region) -> ModelInputs:
        """A clip with speech: one utterance, on the window training evaluated clips on."""
        inputs = self.inner.inputs(signal)
        return ModelInputs(
            inputs.rows, np.array([speech.start]), np.array([speech.end]),
            regions=np.array([[speech.start, speech.end]], np.int64),
            region_of_row=np.zeros(1, np.int64), samples=signal.size,
        )  # fmt: skip

    def _ready(self, pending: list[list[Region]], settled: int) -> list[list[Region]]:
        """The pending sentences that are complete and whose right context can no longer
        change."""
        count = 0
        for index, sentence in enumerate(pending):
            has_next = index + 1 < len(pending)
            # a later region starts at or after ``settled`` (see ``self.wait``)
            if not has_next and settled < sentence[-1].end + self.wait:
                break
            count += 1
        return pending[:count]

    def _keep_from(
        self, pending: list[list[Region]], previous_end: int, settled: int, total: int
    ) -> int:
        """The first sample any later row may need."""
        if pending:
            return max(previous_end, pending[0][0].start - self.context, 0)
        start = min(settled, total)
        return max(previous_end, start - self.context, 0) if start > previous_end else previous_end

    def _rows(
        self,
        ready: list[list[Region]],
        after: list[list[Region]],
        buffer: np.ndarray,
        offset: int,
        previous_end: int,
        total: int,
        *,
        final: bool,
    ) -> ModelInputs:
        """The rows of the ``ready`` sentences: each scored as one region from its first
        speech to its last, and each region in it given that row (covering the region)."""
        rows, starts, ends, owner, scored = [], [], [], [], []
        for index, sentence in enumerate(ready):
            following = ready[index + 1] if index + 1 < len(ready) else (after or [None])[0]
            region = Region(sentence[0].start, sentence[-1].end)
            left = (previous_end + region.start) // 2 if previous_end else 0
            right = (region.end + following[0].start) // 2 if following is not None else total
            left = max(left, region.start - self.context, offset)
            right = min(right, region.end + self.context) if self.context else region.end
            part = self._region_rows(region, left, right, buffer, offset)
            previous_end = region.end
            if not part[0]:
                continue  # too short to measure: left out, as a region under --vad-min-speech
            if len(sentence) == 1:
                rows += part[0]
                starts += part[1]
                ends += part[2]
                owner += [len(scored)] * len(part[0])
            else:  # it fits one window: that one row, repeated for each of its regions
                rows += part[0] * len(sentence)
                starts += [member.start for member in sentence]
                ends += [member.end for member in sentence]
                owner += range(len(scored), len(scored) + len(sentence))
            scored += sentence
        return ModelInputs(
            _stack(rows, self._row_shape()), np.array(starts, np.int64), np.array(ends, np.int64),
            regions=np.array([[r.start, r.end] for r in scored], np.int64).reshape(-1, 2),
            region_of_row=np.array(owner, np.int64), samples=total if final else None,
        )  # fmt: skip

    def _region_rows(
        self, region: Region, left: int, right: int, buffer: np.ndarray, offset: int
    ) -> tuple[list[np.ndarray], list[int], list[int]]:
        speech = buffer[region.start - offset : region.end - offset]
        if isinstance(self.inner, EgemapsFrontend):
            try:
                return [self.inner.extractor.extract(speech)], [region.start], [region.end]
            except AudioError:  # openSMILE cannot measure under about 0.08 s
                return [], [], []
        inner, length = self.inner, region.end - region.start
        if length > inner.single_limit:
            windows, begins = split_windows(speech, inner.window, inner.hop)
            begins = begins + region.start
            ends = np.minimum(begins + inner.window, region.end)
            return list(windows), begins.tolist(), ends.tolist()
        if right - left <= inner.window:
            row = center_window(buffer[left - offset : right - offset], inner.window)
            return [row], [region.start], [region.end]
        centre = (region.start + region.end) // 2
        begin = min(max(centre - inner.window // 2, left), right - inner.window)
        row = buffer[begin - offset : begin + inner.window - offset]
        covered = (max(region.start, begin), min(region.end, begin + inner.window))
        return [row], [covered[0]], [covered[1]]

    def _row_shape(self) -> tuple[int, ...]:
        if isinstance(self.inner, EgemapsFrontend):
            return (len(self.inner.extractor.feature_names),)
        return (self.inner.window,)


def merge_inputs(chunks: list[ModelInputs]) -> ModelInputs:
    """One file's chunks as one set of inputs (region indices renumbered across chunks)."""
    owners, base = [], 0
    for chunk in chunks:
        owners.append(chunk.region_of_row + base)
        base += len(chunk.regions)
    return ModelInputs(
        np.concatenate([chunk.rows for chunk in chunks]),
        np.concatenate([chunk.starts for chunk in chunks]),
        np.concatenate([chunk.ends for chunk in chunks]),
        regions=np.concatenate([chunk.regions for chunk in chunks]),
        region_of_row=np.concatenate(owners),
        samples=chunks[-1].samples,
    )


def _stack(rows: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    if not rows:
        return np.zeros((0, *shape), np.float32)
    return np.stack(rows).astype(np.float32, copy=False)
