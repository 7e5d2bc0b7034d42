"""How well Silero VAD cuts the long recordings, per actor and per VAD setting: no emotion model.

    python benchmarks/vad_settings.py [--split train] [--files 60] [--setting 0.5/0.3 ...]

Builds ``benchmarks/long_recordings.py``'s recordings from one split's RAVDESS clips (``train``
too: the VAD was never fitted to any of them, so the 20 training actors are a fair place to
choose its settings, where validation's two actors are few) and reports, for each
``THRESHOLD/MIN_SILENCE[/PAD[/REFRESH]]`` setting, utterance precision and recall at IoU >= 0.5
(one region to one utterance, as ``long_recordings.py``), overall and for each actor (each
recording is built from one actor's clips, ``--files`` of them per actor), and how the misses
split: an utterance covered by a region that also covers another one (merged), one whose best
region covers under half of it (cut short or split), or none at all (missed).

Its "merged" counts an utterance without a one-to-one match at IoU >= 0.5 whose best region
touches another utterance. ``segmentation_losses.py``'s "merged" classes use another rule (that
region is also the one covering most of another utterance, whatever the IoU), so the two
counts differ on the same recordings; neither is the VAD's own joining of speech across pauses
under ``--vad-min-silence``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
from long_recordings import RATE, Recording, build, claim_match, most_covering
from vad_inputs import vad_spans

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import load_audio
from ser.batch.segmentation import Segmentation
from ser.corpus import read_ravdess, select
from ser.vad import SileroVad

from common import RAVDESS_16K, describe_machine

DEFAULT_SETTINGS = ("0.5/0.3", "0.35/0.3", "0.5/0.15", "0.5/0.6", "0.5/0.3/0.1")


def scores(recordings: list[Recording], spans: dict[str, list[tuple[int, int]]]) -> dict:
    """Precision, recall (IoU >= 0.5, one to one) and the kinds of miss."""
    matched = predicted = truths = merged = short = missed = 0
    for recording in recordings:
        found = [(s / RATE, e / RATE) for s, e in spans[recording.name]]
        predicted += len(found)
        used: set[int] = set()
        owners = [
            [k for k, (s, e, _, _) in enumerate(recording.utterances) if min(e, fe) > max(s, fs)]
            for fs, fe in found
        ]
        for index, (start, end, _, _) in enumerate(recording.utterances):
            truths += 1
            if claim_match((start, end), found, used):
                matched += 1
                continue
            owner = most_covering((start, end), found)
            if owner is None:
                missed += 1
            elif len(owners[owner]) > 1 and index in owners[owner]:
                merged += 1
            else:
                short += 1
    return {
        "precision": matched / max(predicted, 1), "recall": matched / max(truths, 1),
        "regions": predicted, "utterances": truths, "merged": merged, "short": short,
        "missed": missed,
    }  # fmt: skip


def setting_of(text: str) -> Segmentation:
    """``THRESHOLD/MIN_SILENCE[/PAD[/REFRESH]]`` as the segmentation it names."""
    threshold, min_silence, *rest = (float(part) for part in text.split("/"))
    extra = dict(zip(("pad_s", "refresh_s"), rest, strict=False))
    return Segmentation("vad", threshold=threshold, min_silence_s=min_silence, **extra)


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--split", type=click.Choice(["train", "validation", "test"]), default="train")
@click.option("--files", default=12, show_default=True, help="Recordings per actor.")
@click.option("--seed", default=0, show_default=True)
@click.option("--setting", "settings", multiple=True, default=DEFAULT_SETTINGS, show_default=True)
def main(data: Path, split: str, files: int, seed: int, settings: tuple[str, ...]) -> None:
    started = time.perf_counter()
    clips = select(read_ravdess(data), split)
    actors = sorted({clip.speaker for clip in clips})
    vad = SileroVad()
    print(f"data: {data} split={split} ({len(clips)} clips, {len(actors)} actors); "
          f"{files} recordings per actor; machine: {describe_machine()}")  # fmt: skip
    per_actor: dict[str, dict[str, dict]] = {text: {} for text in settings}
    everything: dict[str, list] = {text: [] for text in settings}
    with tempfile.TemporaryDirectory(prefix="ser-vad-") as tmp:
        for number, actor in enumerate(actors):
            folder = Path(tmp) / actor
            folder.mkdir()
            own = [clip for clip in clips if clip.speaker == actor]
            recordings = build(own, files, seed + number, folder)
            signals = {r.name: load_audio(folder / r.name) for r in recordings}
            for text in settings:
                spans = {name: vad_spans(s, vad, setting_of(text)) for name, s in signals.items()}
                per_actor[text][actor] = scores(recordings, spans)
                everything[text].append(per_actor[text][actor])
    print("| setting (threshold/min silence[/pad[/refresh]]) | precision | recall | regions "
          "| utterances | merged | cut short | missed | worst actor (recall) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for text in settings:
        parts = everything[text]
        total = {key: sum(p[key] for p in parts) for key in ("regions", "utterances", "merged",
                                                              "short", "missed")}  # fmt: skip
        matched_p = sum(p["precision"] * p["regions"] for p in parts)
        matched_r = sum(p["recall"] * p["utterances"] for p in parts)
        worst = min(per_actor[text].items(), key=lambda item: item[1]["recall"])
        cells = [
            f"{matched_p / max(total['regions'], 1):.3f}",
            f"{matched_r / max(total['utterances'], 1):.3f}",
            *(str(total[key]) for key in ("regions", "utterances", "merged", "short", "missed")),
            f"{worst[0]} ({worst[1]['recall']:.3f})",
        ]
        print(f"| {text} | " + " | ".join(cells) + " |", flush=True)
    print("recall per actor, first setting: " + ", ".join(
        f"{actor} {score['recall']:.2f}" for actor, score in per_actor[settings[0]].items()
    ))  # fmt: skip
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
