"""Where ``--segmentation vad`` loses utterance accuracy, by cause, on long recordings of a split.

    python benchmarks/segmentation_losses.py [--split validation] [--files 24] [--seed 0]

Builds ``benchmarks/long_recordings.py``'s recordings (its background included) from one split
of ``--data`` (RAVDESS's folder, or a manifest such as nEMO's), finds speech with Silero VAD
(the ``--segmentation vad`` defaults, or ``--vad-threshold``, ``--vad-min-silence``,
``--vad-refresh``), and scores every region in process as ``ser-batch`` does: 1 s of context,
regions joined into sentences by ``--vad-sentence-pause`` (the model's default) and
``--vad-sentence-part`` scored as one (0.7.0; ``--vad-sentence-pause 0`` scores each alone, as
0.6.0 did); then scores each true utterance span alone the same way (an oracle).
Each true utterance is put in one class by how the VAD's regions cover it:

- ``missed``: no region touches it;
- ``merged, same label`` / ``merged, other label``: the region covering most of it is also the
  one covering most of another utterance (of the same emotion, or of another), whatever its
  IoU (``vad_settings.py``'s "merged" is another rule: see its docstring);
- ``split``: more than one region touches it;
- ``cut short``: one region, covering under 90% of it at IoU < 0.5;
- ``too long``: one region, covering 90% or more of it at IoU < 0.5;
- ``matched``: one region at IoU >= 0.5.

For each class: how many utterances, the oracle's accuracy on them (their true span as the
region), the VAD's (the label of the region covering most of it), and the points of the overall
utterance accuracy the class loses (oracle minus VAD, over all utterances). The emotion model
sees its training actors' clips with ``--split train``, so accuracies are high there; the
classes and their losses still say where the segmentation costs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from long_recordings import (
    RATE,
    Recording,
    build,
    cover,
    iou,
    most_covering,
    recording_options,
    touching,
)
from vad_inputs import Scorer, truth_spans, vad_spans

from ser.audio import load_audio
from ser.batch.segmentation import Segmentation
from ser.corpus import load_corpus, select
from ser.vad import SileroVad

from common import describe_machine

CLASSES = (
    "matched", "cut short", "too long", "split", "merged, same label", "merged, other label",
    "missed",
)  # fmt: skip


def classify(
    recording: Recording, truth: list[tuple[int, int]], found: list
) -> tuple[list[str], list[int | None]]:
    """Each true utterance's class (module docstring), and the region covering most of it."""
    owners = [most_covering(span, found) for span in truth]
    classes = []
    for index, span in enumerate(truth):
        owner = owners[index]
        if owner is None:
            classes.append("missed")
            continue
        sharing = [j for j, other in enumerate(owners) if other == owner and j != index]
        if sharing:
            labels = {recording.utterances[j][2] for j in sharing}
            other = labels != {recording.utterances[index][2]}
            classes.append("merged, other label" if other else "merged, same label")
        elif len(touching(span, found)) > 1:
            classes.append("split")
        elif iou(span, found[owner]) >= 0.5:
            classes.append("matched")
        else:
            short = cover(span, found[owner]) < 0.9 * (span[1] - span[0])
            classes.append("cut short" if short else "too long")
    return classes, owners


def inner_pauses(span: tuple[int, int], found: list) -> list[float]:
    """Seconds of each pause between regions touching ``span`` that lies inside it."""
    pairs = pairwise(touching(span, found))
    return [(b[0] - a[1]) / RATE for a, b in pairs if span[0] < a[1] and b[0] < span[1]]


def labels_of(
    signal: np.ndarray, spans: list[tuple[int, int]], scorer: Scorer, settings: Segmentation
) -> list[str]:
    """The model's label for each span, as ``ser-batch`` gives it under ``settings``."""
    probs, _ = scorer.sentences(signal, spans, settings)
    return [scorer.label(p) for p in probs]


@click.command()
@recording_options(split="validation", splits=("train", "validation", "test"))
@click.option("--vad-threshold", default=Segmentation.threshold, show_default=True)
@click.option("--vad-min-silence", default=Segmentation.min_silence_s, show_default=True)
@click.option("--vad-refresh", default=Segmentation.refresh_s, show_default=True)
@click.option("--vad-sentence-pause", default=None, type=float, help="Default: the model's.")
@click.option("--vad-sentence-part", default=Segmentation.sentence_part_s, show_default=True)
def main(
    data: Path, split: str, files: int, seed: int, model: str, vad_threshold: float,
    vad_min_silence: float, vad_refresh: float, vad_sentence_pause: float | None,
    vad_sentence_part: float,
) -> None:  # fmt: skip
    started = time.perf_counter()
    settings = Segmentation(
        "vad", threshold=vad_threshold, min_silence_s=vad_min_silence, refresh_s=vad_refresh,
        sentence_pause_s=vad_sentence_pause, sentence_part_s=vad_sentence_part,
    )  # fmt: skip
    clips = select(load_corpus(data), split)
    scorer, vad = Scorer(model), SileroVad()
    print(f"data: {data} split={split} ({len(clips)} clips), seed {seed}, model {model}; "
          f"machine: {describe_machine()}")  # fmt: skip
    settings = settings.for_model(scorer.model.metadata)
    print(f"VAD: {settings.describe(vad.sha256)}")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # utterances, oracle, vad
    missed, pauses, split = [], [], 0
    with tempfile.TemporaryDirectory(prefix="ser-losses-") as tmp:
        recordings = build(clips, files, seed, Path(tmp))
        for recording in recordings:
            signal = load_audio(Path(tmp) / recording.name)
            found, truth = vad_spans(signal, vad, settings), truth_spans(recording)
            found_labels = labels_of(signal, found, scorer, settings)
            oracle_labels = labels_of(signal, truth, scorer, settings.alone())
            classes, owners = classify(recording, truth, found)
            for index, (kind, owner) in enumerate(zip(classes, owners, strict=True)):
                label, clip = recording.utterances[index][2:]
                counts[kind][0] += 1
                counts[kind][1] += oracle_labels[index] == label
                counts[kind][2] += owner is not None and found_labels[owner] == label
                if kind == "split":
                    split += 1
                    pauses += inner_pauses(truth[index], found)
                if kind == "missed":
                    span = signal[truth[index][0] : truth[index][1]]
                    level = 10 * np.log10(float(np.mean(span**2)) + 1e-12)
                    missed.append(f"{clip.name} {label} {level:.0f} dBFS")
    total = sum(c[0] for c in counts.values())
    clips_whole = scorer.clips_whole(recordings)
    print(f"{len(recordings)} recordings, {total} utterances; their source clips scored whole "
          f"(no background, no segmentation): {clips_whole:.3f}")  # fmt: skip
    print("| class | utterances | oracle accuracy | vad accuracy | points lost |")
    print("|---|---|---|---|---|")
    for kind in [*CLASSES, "all"]:
        n, oracle, found = (
            [sum(c[i] for c in counts.values()) for i in range(3)] if kind == "all"
            else counts.get(kind, [0, 0, 0])
        )  # fmt: skip
        if n:
            print(f"| {kind} | {n} | {oracle / n:.3f} | {found / n:.3f} | "
                  f"{100 * (oracle - found) / total:+.1f} |")  # fmt: skip
    print("missed: " + ("; ".join(missed) or "none"))
    cut = f", {min(pauses):.2f}-{max(pauses):.2f} s" if pauses else ""
    print(f"split: {split} utterances, {len(pauses)} pauses inside them between regions{cut}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
