"""How a recording is cut before the emotion model sees it, and where its speech is.

``windows`` cuts fixed windows over the whole file (silence included); ``vad`` scores only the
speech regions that Silero VAD (:mod:`ser.vad`) finds. :class:`SpeechTracker` turns the
VAD's frame probabilities into regions the way Silero's ``get_speech_timestamps`` does
(hysteresis between ``threshold`` and ``threshold - 0.15``, pauses shorter than
``min_silence_s`` merged, regions shorter than ``min_speech_s`` dropped, regions longer than
``max_speech_s`` split at their longest pause, ``pad_s`` added on both sides), but frame by
frame as the audio arrives, so a long file never needs its whole list of probabilities.
:func:`join_sentences` groups regions that look like one sentence cut at a pause inside it,
for scoring (:mod:`ser.batch.utterances`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ser.vad import FRAME, THRESHOLD

if TYPE_CHECKING:
    from ser.metadata import ModelMetadata

SEGMENTATIONS = ("vad", "windows")
DEFAULT_SEGMENTATION = "windows"
"""Kept at ``windows`` for now: see README "Segmentation" for the measurements and why."""
SAMPLE_RATE = 16_000
SENTENCE_PAUSE_S = 1.0
"""The sentence pause of a model whose heads pool over speech only (``--pool speech``). Chosen
with ``benchmarks/sentence_pauses.py`` on validation actors 21-22; the same rule costs a model
that pools over every frame accuracy there, so those score each region alone (README
"Sentences cut at their own pauses")."""
MIN_PAUSE_AT_MAX_SPEECH_S = 0.098
"""A pause at least this long is where an over-long region may be split (Silero's default)."""


@dataclass(frozen=True)
class Segmentation:
    """``--segmentation`` and the VAD's settings (unused by ``windows``)."""

    mode: str = DEFAULT_SEGMENTATION
    threshold: float = THRESHOLD
    min_speech_s: float = 0.25
    min_silence_s: float = 0.3
    max_speech_s: float = 20.0
    pad_s: float = 0.03
    context_s: float = 1.0
    """Seconds of the recording the model sees on each side of a short region (never past the
    middle of the pause to the next region; zero-padded beyond): chosen on validation actors
    21-22 (README "Segmentation"), as the ~1 s of near-silence around a RAVDESS utterance."""
    refresh_s: float = 0.0
    """Seconds between restarts of the VAD's recurrent state, on two lanes half a period apart
    (:mod:`ser.vad`); 0 carries one state through the whole recording, as Silero does."""
    sentence_pause_s: float | None = None
    """Neighbouring regions this close that fit one model window together, one of them shorter
    than :attr:`sentence_part_s`, are scored as one sentence (:func:`join_sentences`); 0
    scores every region alone; None: the model's own (:meth:`for_model`)."""
    sentence_part_s: float = 1.2
    """Only a pair with a region this short (a fragment of a sentence) is joined; 0: any pair."""

    def __post_init__(self) -> None:
        """Refuse impossible settings, saying what is allowed.

        Raises:
            ValueError: for an unknown mode or settings out of range.
        """
        if self.mode not in SEGMENTATIONS:
            raise ValueError(
                f"unknown segmentation {self.mode!r}; expected one of {', '.join(SEGMENTATIONS)}"
            )
        pause = 0.0 if self.sentence_pause_s is None else self.sentence_pause_s
        values = (self.threshold, self.min_speech_s, self.min_silence_s, self.max_speech_s,
                  self.pad_s, self.context_s, self.refresh_s, pause,
                  self.sentence_part_s)  # fmt: skip
        if not all(math.isfinite(value) for value in values):
            raise ValueError("VAD settings must be finite numbers (not nan or inf)")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VAD threshold must lie between 0 and 1, got {self.threshold}")
        if min(self.min_speech_s, self.pad_s, self.context_s, pause, self.sentence_part_s) < 0:
            raise ValueError(
                "VAD minimum speech, padding, context and sentence settings must not be negative"
            )
        if self.min_silence_s < 2 * self.pad_s:
            raise ValueError(
                f"VAD minimum silence ({self.min_silence_s} s) must be at least twice the padding "
                f"({self.pad_s} s), so that padded regions never overlap"
            )
        if self.max_speech_s < 1.0 or self.split_after <= self.min_speech_s * SAMPLE_RATE:
            raise ValueError(
                f"VAD maximum speech ({self.max_speech_s} s) must be at least 1 s and longer than "
                f"the minimum speech plus twice the padding plus one "
                f"{FRAME * 1000 / SAMPLE_RATE:g} ms frame"
            )
        if self.refresh_s != 0 and self.refresh_s < 1.0:
            raise ValueError(f"VAD refresh must be 0 (never) or at least 1 s, got {self.refresh_s}")

    @property
    def split_after(self) -> float:
        """Samples of unpadded speech past which a region is split: the padded region, plus
        the one frame the tracker decides late (as Silero), stays within the maximum."""
        return self.max_speech_s * SAMPLE_RATE - FRAME - 2 * round(self.pad_s * SAMPLE_RATE)

    @property
    def vad(self) -> bool:
        return self.mode == "vad"

    def describe(self, vad_sha256: str) -> str:
        """What the ``settings`` cell adds for this segmentation (part of the incremental key)."""
        if not self.vad:
            return ""
        return (
            f"vad=silero:{vad_sha256[:8]} threshold={_exact(self.threshold)} "
            f"min_speech={_exact(self.min_speech_s)} min_silence={_exact(self.min_silence_s)} "
            f"max_speech={_exact(self.max_speech_s)} pad={_exact(self.pad_s)} "
            f"context={_exact(self.context_s)}"
            + (f" refresh={_exact(self.refresh_s)}" if self.refresh_s else "")
            + (
                f" sentence_pause={_exact(self.sentence_pause_s)} "
                f"sentence_part={_exact(self.sentence_part_s)}"
                if self.sentence_pause_s
                else ""
            )
        )

    def for_model(self, metadata: ModelMetadata) -> Segmentation:
        """The same, the sentence pause settled for this model if left to it: joining helps a
        model that pools over speech only (its metadata's ``pool`` is ``speech``) and costs
        one that pools over every frame (measured, :data:`SENTENCE_PAUSE_S`)."""
        if self.sentence_pause_s is not None:
            return self
        speech_only = metadata.extra.get("pool") == "speech"
        return replace(self, sentence_pause_s=SENTENCE_PAUSE_S if speech_only else 0.0)

    def alone(self) -> Segmentation:
        """The same, every region scored alone: what speaker mode uses (two regions of a
        sentence could be two speakers' turns, and each region is one item of its speaker's
        statistics) and eGeMAPS models get (they have no window to fit a sentence in)."""
        return replace(self, sentence_pause_s=0.0)

    @property
    def sentence_pause(self) -> int:
        """:attr:`sentence_pause_s` in samples.

        Raises:
            ValueError: while it is still the model's to settle (None): reading it as 0 would
                score a gated model's sentences apart without a word.
        """
        if self.sentence_pause_s is None:
            raise ValueError(
                "the sentence pause is not settled: call for_model(metadata) or alone() first"
            )
        return round(self.sentence_pause_s * SAMPLE_RATE)

    @property
    def sentence_part(self) -> int:
        """:attr:`sentence_part_s` in samples."""
        return round(self.sentence_part_s * SAMPLE_RATE)

    @property
    def refresh_frames(self) -> int:
        """:attr:`refresh_s` in VAD frames (0: never)."""
        return round(self.refresh_s * SAMPLE_RATE / FRAME)


def _exact(value: float) -> str:
    """``value`` as short as it reads back exactly: ``0.5`` as before, ``0.6410822868347168``
    whole (six digits would give two different thresholds one incremental key)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


@dataclass(frozen=True)
class Region:
    """A stretch of speech, in samples at 16 kHz, padding included."""

    start: int
    end: int


class SpeechTracker:
    """Frame probabilities in, finished speech regions out, in order, as soon as each is final.

    :attr:`settled` says how far the future is decided: no region found later starts before it.
    """

    def __init__(self, settings: Segmentation) -> None:
        rate = SAMPLE_RATE
        self.threshold = settings.threshold
        self.negative = max(settings.threshold - 0.15, 0.01)
        self.min_speech = rate * settings.min_speech_s
        self.min_silence = rate * settings.min_silence_s
        self.pad = round(rate * settings.pad_s)
        self.max_speech = settings.split_after
        self.min_pause = rate * MIN_PAUSE_AT_MAX_SPEECH_S
        self.frame = 0
        self.triggered = False
        self.start = 0
        self.temp_end = 0
        self.pauses: list[tuple[int, int]] = []  # (start, length) of pauses in the region
        self.last_end = 0

    @property
    def settled(self) -> int:
        begin = self.start if self.triggered else self.frame * FRAME
        return max(self.last_end, begin - self.pad)

    def feed(self, probs: Iterable[float]) -> list[Region]:
        """Advance over the next frames' probabilities; the regions they finish."""
        out: list[Region] = []
        for prob in np.asarray(probs, np.float64).tolist():
            self._step(prob, out)
        return out

    def finish(self, total: int) -> list[Region]:
        """The region still open at the end of a ``total``-sample recording, if long enough."""
        out: list[Region] = []
        end = total
        if self.triggered and end - self.start > self.max_speech:  # over the maximum at the end
            end = self.temp_end or total  # in a pause: the speech ended where it began
            while self.triggered and end - self.start > self.max_speech:
                self._split(end, out)
        if self.triggered and end - self.start > self.min_speech:
            out.append(self._region(self.start, end, total=total))
        self.triggered = False
        return [Region(r.start, min(r.end, total)) for r in out]

    def _step(self, prob: float, out: list[Region]) -> None:
        current = self.frame * FRAME
        self.frame += 1
        speech = prob >= self.threshold
        short = None  # a pause too short to be kept, that speech ends at this frame
        if speech and self.temp_end:
            pause = (self.temp_end, current - self.temp_end)
            if pause[1] > self.min_pause:
                self.pauses.append(pause)
            else:
                short = pause
            self.temp_end = 0
        if speech and not self.triggered:
            self.triggered, self.start = True, current
            return
        if prob < self.negative and self.triggered:
            if not self.temp_end:
                self.temp_end = current
            if current - self.temp_end >= self.min_silence:  # the region ends at its pause
                if self.temp_end - self.start > self.min_speech:
                    out.append(self._region(self.start, self.temp_end))
                self.triggered, self.temp_end, self.pauses = False, 0, []
                return
        if self.triggered and not self.temp_end and current - self.start > self.max_speech:
            self._split(current, out, short)  # in speech: too long (a pause decides)

    def _split(self, current: int, out: list[Region], short: tuple[int, int] | None = None) -> None:
        """Cut an over-long region at its longest pause, else here.

        Called in speech only: while a pause goes on, the region may be about to end within
        the maximum, so the decision waits for the pause to close (the region ends) or for
        speech; the pause speech resumed after is then a cut too, however ``short``, so the
        piece cut off never runs past the maximum. Only pauses after at least ``min_speech``
        of the region are cuts, so the piece cut off is never shorter than a region may be.
        """
        pauses = [*self.pauses, short] if short else self.pauses
        cuts = [(end, length) for end, length in pauses if end - self.start > self.min_speech]
        if not cuts:
            out.append(self._region(self.start, current, gap=0))
            self.triggered, self.pauses = False, []
            return
        end, length = max(cuts, key=lambda pause: pause[1])
        out.append(self._region(self.start, end, gap=length))
        self.start = end + length
        self.pauses = [pause for pause in self.pauses if pause[0] > end]  # the rest's

    def _region(self, start: int, end: int, *, gap: int | None = None, total: int = 0) -> Region:
        """``[start, end)`` padded; after a split at a pause of ``gap`` samples, half of it."""
        after = self.pad if gap is None else min(self.pad, gap // 2)
        region = Region(max(start - self.pad, self.last_end, 0), end + after)
        if total:
            region = Region(region.start, min(region.end, total))
        self.last_end = region.end
        return region


def join_sentences(
    regions: Sequence[Region], pause: int, longest: int, part: int = 0
) -> list[list[Region]]:
    """Consecutive regions grouped into sentences, for scoring (a sentence cut at a pause
    inside it scores far worse in parts).

    A region joins the sentence before it when the pause between them is under ``pause``
    samples, the sentence with it spans at most ``longest`` samples (one model window, so the
    model sees all of it), and, if ``part`` is set, the sentence's last region or this one is
    shorter than ``part`` samples. ``pause`` 0: every region its own sentence.
    """
    return extend_sentences([], regions, pause, longest, part)


def extend_sentences(
    sentences: list[list[Region]], regions: Iterable[Region], pause: int, longest: int,
    part: int = 0,
) -> list[list[Region]]:  # fmt: skip
    """:func:`join_sentences` as regions arrive: ``regions`` (later than any in
    ``sentences``) join the last sentence or start new ones; ``sentences`` is returned."""
    for region in regions:
        if sentences and _joins(sentences[-1], region, pause, longest, part):
            sentences[-1].append(region)
        else:
            sentences.append([region])
    return sentences


def _joins(sentence: list[Region], region: Region, pause: int, longest: int, part: int) -> bool:
    last = sentence[-1]
    if region.start - last.end >= pause or region.end - sentence[0].start > longest:
        return False
    return not part or min(last.end - last.start, region.end - region.start) < part
