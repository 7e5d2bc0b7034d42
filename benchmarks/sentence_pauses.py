"""Pauses inside sentences: does scoring neighbouring VAD regions as one sentence help?

    python benchmarks/sentence_pauses.py [--split validation] [--files 36] [--seed 0]
        [--pauses 0.25] [--rule 0 --rule 1 --rule 1/1.2 ...]

Builds ``benchmarks/long_recordings.py``'s recordings of one split, with ``--pauses``: the chance
that an utterance gets one pause of 0.3-1.0 s of background inside it, at its quietest frame
in the middle (``long_recordings.with_pause``; 0 builds the recordings ``long_recordings.py``
does). Speakers do pause inside sentences (the RAVDESS test actors do); the training and
validation actors seldom do, so a remedy for the VAD cutting a sentence at such a pause can
only be chosen on validation recordings built this way.

Finds speech with Silero VAD (the ``--segmentation vad`` defaults), then for each ``--rule``
``PAUSE[/PART]`` groups the regions into sentences (``ser.batch.segmentation.join_sentences``:
a region joins the one before it when the pause between them is under PAUSE seconds, the
sentence so far and it fit in one model window, and, with PART, one of the two is shorter than
PART seconds; ``0``: no grouping, as ``ser-batch`` scores today). Each sentence is scored in
process as ``ser-batch`` scores a region (1 s of context, never past the middle of the pause to
the next sentence) and every region in it takes the sentence's probabilities. Printed per
rule: utterance accuracy (each true utterance takes the label of the region covering most of
it), single-emotion file accuracy (regions weighted by length), how many regions were joined,
and how many sentences span more than one true utterance (joins across utterances).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).parent))
from long_recordings import build, recording_options, touching
from vad_inputs import Scorer, file_label, region_labels_accuracy, truth_spans, vad_spans

from ser.audio import load_audio
from ser.batch.segmentation import Segmentation
from ser.corpus import load_corpus, select
from ser.vad import SileroVad

from common import describe_machine


def parse_rule(rule: str) -> tuple[float, float]:
    """``PAUSE[/PART]`` as seconds (PART 0: no condition on the parts' lengths)."""
    pause, _, part = rule.partition("/")
    return float(pause), float(part or 0)


@click.command()
@recording_options(split="validation", splits=("train", "validation", "test"))
@click.option("--pauses", default=0.25, show_default=True, help="Chance of a pause inside.")
@click.option("--rule", "rules", multiple=True, default=("0", "1"), show_default=True)
def main(
    data: Path, split: str, files: int, seed: int, model: str, pauses: float,
    rules: tuple[str, ...],
) -> None:  # fmt: skip
    started = time.perf_counter()
    clips = select(load_corpus(data), split)
    scorer, vad, settings = Scorer(model), SileroVad(), Segmentation("vad")
    print(f"data: {data} split={split} ({len(clips)} clips), seed {seed}, pauses {pauses}, "
          f"model {model}; machine: {describe_machine()}")  # fmt: skip
    labels = scorer.model.labels
    with tempfile.TemporaryDirectory(prefix="ser-pauses-") as tmp:
        recordings = build(clips, files, seed, Path(tmp), pauses=pauses)
        signals = {r.name: load_audio(Path(tmp) / r.name) for r in recordings}
    found = {name: vad_spans(signal, vad, settings) for name, signal in signals.items()}
    utterances = sum(len(r.utterances) for r in recordings)
    split_count = sum(
        len(touching(span, found[r.name])) > 1 for r in recordings for span in truth_spans(r)
    )
    clips_whole = scorer.clips_whole(recordings)
    print(f"{len(recordings)} recordings, {utterances} utterances, "
          f"{sum(len(f) for f in found.values())} VAD regions; {split_count} utterances touch "
          f"more than one region; source clips scored whole: {clips_whole:.3f}")  # fmt: skip
    print("| rule | utterance accuracy | file accuracy, single | regions joined | "
          "sentences over more than one utterance |")  # fmt: skip
    print("|---|---|---|---|---|")
    for rule in rules:
        pause, part = parse_rule(rule)
        rule_settings = Segmentation("vad", sentence_pause_s=pause, sentence_part_s=part)
        predicted, single, single_right, joined, across = [], 0, 0, 0, 0
        for recording in recordings:
            signal, regions = signals[recording.name], found[recording.name]
            expanded, groups = scorer.sentences(signal, regions, rule_settings)
            spans = [(group[0].start, group[-1].end) for group in groups]
            predicted += [scorer.label(p) for p in expanded]
            joined += sum(len(group) - 1 for group in groups)
            truth = truth_spans(recording)
            across += sum(len(touching(span, truth)) > 1 for span in spans)
            if recording.kind == "single":
                single += 1
                single_right += file_label(expanded, regions, labels) == recording.utterances[0][2]
        accuracy = region_labels_accuracy(
            recordings, [found[r.name] for r in recordings], predicted
        )
        print(f"| {rule} | {accuracy:.3f} | {single_right / max(single, 1):.3f} (of {single}) | "
              f"{joined} | {across} |", flush=True)  # fmt: skip
    print(f"{scorer.rows} model rows, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
