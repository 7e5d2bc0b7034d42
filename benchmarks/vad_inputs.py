"""Ablation: how a speech region becomes the model's input, on long recordings of one split.

    python benchmarks/vad_inputs.py [--split validation] [--files 36] [--variant 1 ...]

Builds the recordings of ``benchmarks/long_recordings.py`` twice (with their low background
noise or room tone, and without any: digital silence between the utterances, the same
utterances at the same places), finds speech with the shipped Silero VAD and the default
``--segmentation vad`` settings, and scores every region in process with the model, once for
each way of turning a region into a 4 s input:

- ``margin 0``: the region's own samples alone, zero-padded symmetrically to the window (as a
  short clip is scored: ``ser.audio.center_window``);
- ``margin M``: the region plus up to M seconds of the recording on each side (never past the
  middle of the pause to the next region), then zero-padded;
- ``fill``: what ``--segmentation vad`` did first: the window centred on the region, filled
  with the recording out to the middle of each pause, zero-padded beyond.
- ``MARGINgGATE``: the same, the context attenuated by GATE dB; ``MARGIN/DB``: padded with
  white noise at DB dBFS instead of zeros.

Each variant is run on the VAD's regions and on the true utterance spans (an oracle that
separates segmentation errors from input errors). Utterance accuracy: each true utterance takes
the label of the region that overlaps it most (none: wrong). File accuracy: single-emotion
files, region probabilities averaged weighted by region length, as ``ser-batch`` does. The
clip references: each source clip scored whole (as ``benchmarks/accuracy.py``) and each
utterance's cut clip alone, zero-padded; each source clip whole with the benchmark's white
noise, or its room tone, added (what the background alone costs, with no segmentation at
all). Regions longer than 1.5 windows are scored over their own windows every hop and
averaged, as ``ser-batch`` does, in every variant.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from long_recordings import (
    RATE,
    Recording,
    background,
    build,
    most_covering,
    recording_options,
    trim_to_speech,
)

from ser.audio import center_window, load_audio, split_windows
from ser.batch.frontends import frontend_for
from ser.batch.scoring import aggregate
from ser.batch.segmentation import Region, Segmentation, SpeechTracker, join_sentences
from ser.batch.session import ScoringModel
from ser.batch.utterances import SpeechFrontend
from ser.corpus import read_ravdess, select
from ser.vad import SileroVad

from common import describe_machine

DEFAULT_VARIANTS = ("0", "0.25", "0.5", "1", "fill")


def region_input(
    signal: np.ndarray, span: tuple[int, int], bounds: tuple[int, int], margin: float | None,
    window: int, hop: int, single_limit: int, floor_db: float | None = None,
    gate_db: float | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """The model rows for one region: its windows if long, else one window with context.

    The ablation's own builder, for its variants (other margins, padding, gating); what
    ``ser-batch`` itself does is :meth:`Scorer.sentences`, through the product's frontend.

    ``floor_db``: pad with white noise at this level (dBFS) instead of zeros. ``gate_db``: the
    context (outside the region) attenuated by this many dB.
    """
    start, end = span
    if end - start > single_limit:
        return list(split_windows(signal[start:end], window, hop)[0])
    reach = window // 2 if margin is None else round(margin * RATE)
    left, right = max(bounds[0], start - reach, 0), min(bounds[1], end + reach, signal.size)
    if gate_db is not None:
        signal = signal[left:right].copy()
        gain = np.float32(10 ** (-gate_db / 20))
        signal[: start - left] *= gain
        signal[end - left :] *= gain
        start, end, left, right = start - left, end - left, 0, right - left
    if right - left <= window:
        row = center_window(signal[left:right], window)
        if floor_db is not None:
            floor = np.random.default_rng(0).standard_normal(window).astype(np.float32)
            floor *= np.float32(10 ** (floor_db / 20))
            pad = (window - (right - left)) // 2
            floor[pad : pad + right - left] = signal[left:right]
            row = floor
        return [row]
    centre = (start + end) // 2
    begin = min(max(centre - window // 2, left), right - window)
    return [signal[begin : begin + window]]


def neighbour_bounds(spans: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """For each span, the middles of the pauses before and after it."""
    bounds = []
    for index, (start, end) in enumerate(spans):
        left = (spans[index - 1][1] + start) // 2 if index else 0
        right = (end + spans[index + 1][0]) // 2 if index + 1 < len(spans) else total
        bounds.append((left, right))
    return bounds


class Scorer:
    """The model, and how many rows it has scored (``rows``)."""

    def __init__(self, model: str) -> None:
        self.model = ScoringModel(model)
        meta = self.model.metadata
        self.window = round(meta.window_s * meta.sample_rate)
        self.hop = round((meta.hop_s or meta.window_s) * meta.sample_rate)
        self.single_limit = int(1.5 * self.window)
        self.rows = 0
        self._frontends: dict[Segmentation, SpeechFrontend] = {}

    def predict(self, rows: list[np.ndarray]) -> np.ndarray:
        """Each row's probabilities, in batches of 16 (``ser-batch``'s default)."""
        out = []
        for first in range(0, len(rows), 16):
            out.append(self.model.predict(np.stack(rows[first : first + 16])))
        self.rows += len(rows)
        return np.concatenate(out)

    def probs(self, rows: list[np.ndarray]) -> np.ndarray:
        """The mean over a region's rows (the variants' own scoring, not ``ser-batch``'s)."""
        return self.predict(rows).mean(axis=0)

    def whole(self, signal: np.ndarray) -> np.ndarray:
        """A clip scored whole: one window centred on it, as ``benchmarks/accuracy.py``."""
        return self.probs([center_window(signal, self.window)])

    def label(self, probs: np.ndarray) -> str:
        """The class of the highest probability."""
        return self.model.labels[int(np.argmax(probs))]

    def clips_whole(self, recordings: list[Recording]) -> float:
        """Accuracy over the recordings' utterances of their source clips, each scored whole
        once (no background, no segmentation): the reference of the long-recording bar."""
        utterances = [u for r in recordings for u in r.utterances]
        whole = {
            path: self.label(self.whole(load_audio(path))) for path in {u[3] for u in utterances}
        }
        return float(np.mean([whole[u[3]] == u[2] for u in utterances]))

    def sentences(
        self, signal: np.ndarray, spans: list[tuple[int, int]], settings: Segmentation
    ) -> tuple[list[np.ndarray], list[list[Region]]]:
        """Each span's probabilities exactly as ``ser-batch`` gives them under ``settings``:
        its own rows for given regions (:meth:`SpeechFrontend.region_inputs`: their context,
        sentences joined by the model's rule) and its own aggregation; and the sentences."""
        if settings not in self._frontends:
            self._frontends[settings] = frontend_for(self.model.metadata, segmentation=settings)
        frontend = self._frontends[settings]
        regions = [Region(*span) for span in spans]
        if not regions:
            return [], []
        inputs = frontend.region_inputs(signal, regions)
        _, segments, _ = aggregate(inputs, self.predict(list(inputs.rows)), RATE)
        return [segment.probs for segment in segments], join_sentences(regions, *frontend.sentence)

    def regions(
        self, signal: np.ndarray, spans: list[tuple[int, int]], margin: float | None,
        floor_db: float | None = None, gate_db: float | None = None,
    ) -> list[np.ndarray]:  # fmt: skip
        """Each span's probabilities, its input built by :func:`region_input`."""
        bounds = neighbour_bounds(spans, signal.size)
        sizes = (self.window, self.hop, self.single_limit)
        return [
            self.probs(region_input(signal, span, bound, margin, *sizes, floor_db, gate_db))
            for span, bound in zip(spans, bounds, strict=True)
        ]


def evaluate(
    recordings: list[Recording], signals: dict[str, np.ndarray],
    spans: dict[str, list[tuple[int, int]]], variant: str, scorer: Scorer,
) -> tuple[float, float, int]:  # fmt: skip
    """Utterance accuracy, single-emotion file accuracy and how many single files."""
    margin_text, _, floor_text = variant.partition("/")
    margin_text, _, gate_text = margin_text.partition("g")
    margin = None if margin_text == "fill" else float(margin_text)
    floor_db = float(floor_text) if floor_text else None
    gate_db = float(gate_text) if gate_text else None
    labels = scorer.model.labels
    predicted, single, single_right = [], 0, 0
    for recording in recordings:
        signal, found = signals[recording.name], spans[recording.name]
        probs = scorer.regions(signal, found, margin, floor_db, gate_db)
        predicted += [scorer.label(p) for p in probs]
        if recording.kind == "single":
            single += 1
            single_right += file_label(probs, found, labels) == recording.utterances[0][2]
    utterances = region_labels_accuracy(
        recordings, [spans[recording.name] for recording in recordings], predicted
    )
    return utterances, single_right / max(single, 1), single


def file_label(
    probs: Sequence[np.ndarray], spans: list[tuple[int, int]], labels: Sequence[str]
) -> str | None:
    """A file's label as ``ser-batch`` gives it: its regions' probabilities weighted by their
    length (None: no region)."""
    if not spans:
        return None
    weights = np.array([end - start for start, end in spans], np.float64)
    mean = (np.array(probs) * weights[:, None]).sum(axis=0) / weights.sum()
    return labels[int(np.argmax(mean))]


def region_labels_accuracy(
    recordings: list[Recording], spans: list[list[tuple[int, int]]], predicted: Sequence[str]
) -> float:
    """Utterance accuracy of labels given region by region, in recording order: each true
    utterance takes the label of the region that overlaps it most (none: wrong)."""
    correct = truths = position = 0
    for recording, found in zip(recordings, spans, strict=True):
        mine = predicted[position : position + len(found)]
        position += len(found)
        for start, end, label, _ in recording.utterances:
            truths += 1
            owner = most_covering((round(start * RATE), round(end * RATE)), found)
            if owner is not None:
                correct += mine[owner] == label
    return correct / max(truths, 1)


def vad_spans(
    signal: np.ndarray, vad: SileroVad, settings: Segmentation | None = None
) -> list[tuple[int, int]]:
    settings = settings or Segmentation(mode="vad")
    tracker = SpeechTracker(settings)
    probs = vad.probabilities(signal, settings.refresh_frames)
    regions = tracker.feed(probs) + tracker.finish(signal.size)
    return [(r.start, r.end) for r in regions]


def truth_spans(recording: Recording) -> list[tuple[int, int]]:
    return [(round(s * RATE), round(e * RATE)) for s, e, _, _ in recording.utterances]


@click.command()
@recording_options(split="validation")
@click.option(
    "--variant", "variants", multiple=True, default=DEFAULT_VARIANTS, show_default=True,
    help="MARGIN[gGATE][/DB]: seconds of context each side (or 'fill'), attenuated by GATE dB "
    "if given, then padding with zeros, or with white noise at DB dBFS.",
)  # fmt: skip
@click.option("--oracle/--no-oracle", default=True, help="Also score the true utterance spans.")
@click.option("--quiet/--no-quiet", default=True, help="Also build recordings with no background.")
@click.option("--vad-threshold", default=0.5, show_default=True)
@click.option("--vad-min-silence", default=0.3, show_default=True)
@click.option("--vad-refresh", default=0.0, show_default=True)
def main(
    data: Path, split: str, files: int, seed: int, model: str, variants: tuple[str, ...],
    oracle: bool, quiet: bool, vad_threshold: float, vad_min_silence: float, vad_refresh: float,
) -> None:  # fmt: skip
    settings = Segmentation(
        "vad", threshold=vad_threshold, min_silence_s=vad_min_silence, refresh_s=vad_refresh
    )
    clips = select(read_ravdess(data), split)
    scorer, vad = Scorer(model), SileroVad()
    started = time.perf_counter()
    print(f"data: {data} split={split} ({len(clips)} clips); machine: {describe_machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}; VAD: {settings.describe('')}")
    with tempfile.TemporaryDirectory(prefix="ser-ablation-") as tmp:
        sets = {}
        for silent in (False, True):
            folder = Path(tmp) / ("quiet" if silent else "background")
            folder.mkdir()
            recordings = build(clips, files, seed, folder, quiet=silent)
            signals = {r.name: load_audio(folder / r.name) for r in recordings}
            sets[silent] = recordings, signals
        recordings = sets[False][0]
        used = sorted({u[3] for r in recordings for u in r.utterances})
        whole = {p: scorer.whole(load_audio(p)) for p in used}
        cut = {p: scorer.whole(trim_to_speech(load_audio(p))) for p in used}
        rng = np.random.default_rng(seed)
        noisy = {}
        for kind in ("noise", "room"):
            noisy[kind] = {}
            for p in used:
                signal = load_audio(p)
                signal = signal + background(signal.size, kind, rng)
                noisy[kind][p] = scorer.whole(signal)
        labels = scorer.model.labels
        utterances = [u for r in recordings for u in r.utterances]
        references = (
            ("whole, as trained", whole),
            ("cut to speech, zero-padded", cut),
            ("whole, the benchmark's white noise added", noisy["noise"]),
            ("whole, the benchmark's room tone added", noisy["room"]),
        )
        for name, table in references:
            acc = np.mean([labels[int(np.argmax(table[u[3]]))] == u[2] for u in utterances])
            print(f"clip accuracy over the {len(utterances)} utterances, clip {name}: {acc:.3f}")
        print("| background | regions | input | utterance accuracy | file accuracy, single |")
        print("|---|---|---|---|---|")
        for silent in (False, True) if quiet else (False,):
            recordings, signals = sets[silent]
            for source in ("vad", "truth") if oracle else ("vad",):
                if source == "vad":
                    spans = {n: vad_spans(signal, vad, settings) for n, signal in signals.items()}
                else:
                    spans = {r.name: truth_spans(r) for r in recordings}
                for variant in variants if not silent else (variants[0], variants[-1]):
                    utt, file_acc, single = evaluate(recordings, signals, spans, variant, scorer)
                    print(
                        f"| {'none' if silent else 'noise/room tone'} | {source} | {variant} | "
                        f"{utt:.3f} | {file_acc:.3f} (of {single}) |",
                        flush=True,
                    )
    print(
        f"{scorer.rows} model rows, {time.perf_counter() - started:.0f} s; "
        f"load average after: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
