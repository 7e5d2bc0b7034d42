"""Speaker mode against plain mode through ser-batch: accuracy, time, and the minimum per speaker.

    python benchmarks/speaker_mode.py [--model NAME_OR_PATH] [--repeats 3]

- RAVDESS test actors 23-24 with ``--speaker-from folder`` (the ``Actor_XX`` folders) and plain;
- nEMO's test speaker (SM0, Polish, never heard in training) with ``--speakers`` from its
  manifest (a ``path,speaker`` CSV) and plain;
- the time of each mode on the same files (fresh reports, medians of ``--repeats`` runs,
  alternating);
- how many of a speaker's clips its statistics need: on the validation actors 21-22, statistics
  from k random clips of each speaker (5 draws), every clip of theirs scored against them
  (the default ``--speaker-min-items`` is chosen here, on validation).

Prints what it measured, the data and the machine.
"""

from __future__ import annotations

import base64
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import center_window, load_audio
from ser.batch.run import RunOptions, run_scoring
from ser.batch.session import resolve_model
from ser.corpus import Clip, load_corpus, select
from ser.models import DEFAULT_MODEL

from common import NEMO, RAVDESS_16K, describe_machine

DRAWS = 5


def scored(report: Path) -> dict[str, dict[str, str]]:
    with report.open() as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def accuracy(clips: list[Clip], rows: dict[str, dict[str, str]]) -> tuple[float, float, int]:
    truth = np.array([clip.label for clip in clips])
    guess = np.array([rows[str(clip.path)]["label"] for clip in clips])
    recalls = [np.mean(guess[truth == label] == label) for label in np.unique(truth)]
    normalised = sum(rows[str(clip.path)].get("normalisation") == "speaker" for clip in clips)
    return float(np.mean(truth == guess)), float(np.mean(recalls)), normalised


def run_mode(model: str, clips: list[Clip], folder: Path, speaker: dict) -> tuple[dict, float]:
    """One fresh run over ``clips``; its rows and wall time."""
    listing = folder / "files.txt"
    listing.write_text("\n".join(str(clip.path) for clip in clips) + "\n")
    report = folder / f"report-{time.monotonic_ns()}.csv"
    started = time.perf_counter()
    run_scoring([], RunOptions(str(report), model=model, files_from=str(listing), **speaker))
    return scored(report), time.perf_counter() - started


def compare(name: str, model: str, clips: list[Clip], speaker: dict, repeats: int) -> None:
    times: dict[str, list[float]] = {"plain": [], "speaker": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            plain_rows, seconds = run_mode(model, clips, Path(folder), {})
            times["plain"].append(seconds)
            speaker_rows, seconds = run_mode(model, clips, Path(folder), speaker)
            times["speaker"].append(seconds)
    plain_acc, plain_uar, _ = accuracy(clips, plain_rows)
    acc, uar, normalised = accuracy(clips, speaker_rows)
    plain_s, speaker_s = statistics.median(times["plain"]), statistics.median(times["speaker"])
    print(f"{name}: {len(clips)} clips")
    print(f"  plain    accuracy={plain_acc:.4f} UAR={plain_uar:.4f} median {plain_s:.2f} s")
    print(
        f"  speaker  accuracy={acc:.4f} UAR={uar:.4f} median {speaker_s:.2f} s "
        f"({speaker_s / plain_s - 1:+.1%} time; {normalised} rows normalised)"
    )
    print(f"  runs (s): plain {times['plain']}, speaker {times['speaker']}")


def minimum_sweep(model_path: Path, clips: list[Clip]) -> None:
    """Validation accuracy when each speaker's statistics come from only k of its clips."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    head = ort.InferenceSession(base64.b64decode(props["speaker_head"]))
    window = round(float(props["window_s"]) * int(props["sample_rate"]))
    audio = np.stack([center_window(load_audio(clip.path), window) for clip in clips])
    outputs = [
        session.run(["probs", "speaker_frames", "frame_valid"], {"audio": audio[i : i + 16]})
        for i in range(0, len(audio), 16)
    ]
    plain, frames, valid = (np.concatenate([o[k] for o in outputs]) for k in range(3))
    frames = frames.astype(np.float16).astype(np.float64)
    truth = np.array([clip.label for clip in clips])
    labels = np.array(json.loads(props["labels"]))
    speakers = np.array([clip.speaker for clip in clips])
    print(f"plain: validation accuracy={np.mean(labels[plain.argmax(1)] == truth):.4f}")
    rng = np.random.default_rng(0)
    for k in (1, 2, 3, 5, 10, 20, 30, 40, 50, 60):
        scores = []
        for _ in range(DRAWS):
            probs = np.empty_like(plain)
            for speaker in np.unique(speakers):
                rows = np.flatnonzero(speakers == speaker)
                basis = rng.choice(rows, size=min(k, rows.size), replace=False)
                weights = valid[basis][:, None, :, None]
                mean = (frames[basis] * weights).sum(axis=(0, 2)) / weights.sum()
                centred = (frames[rows] - mean[None, :, None, :]).astype(np.float32)
                probs[rows] = head.run(["probs"], {"centred": centred, "valid": valid[rows]})[0]
            scores.append(np.mean(labels[probs.argmax(1)] == truth))
        print(f"statistics from {k:2d} clips a speaker: validation accuracy "
              f"{np.mean(scores):.4f} ± {np.std(scores):.4f} ({DRAWS} draws)")  # fmt: skip


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--sweep-only", is_flag=True, help="Only the minimum-per-speaker sweep.")
def main(model: str, repeats: int, sweep_only: bool) -> None:
    started = time.perf_counter()
    path = resolve_model(model)
    print(f"model: {path.name}; machine: {describe_machine()}")
    ravdess = load_corpus(RAVDESS_16K)
    if sweep_only:
        minimum_sweep(path, select(ravdess, "validation"))
        return
    compare(
        "RAVDESS actors 23-24 (--speaker-from folder)", model, select(ravdess, "test"),
        {"speaker_from": "folder"}, repeats,
    )  # fmt: skip
    if NEMO.is_file():
        nemo = select(load_corpus(NEMO), "test")
        with tempfile.TemporaryDirectory() as folder:
            table = Path(folder) / "speakers.csv"
            table.write_text(
                "path,speaker\n" + "".join(f"{clip.path},{clip.speaker}\n" for clip in nemo)
            )
            compare(
                "nEMO test speaker SM0 (--speakers CSV)", model, nemo, {"speakers": table}, repeats
            )
    minimum_sweep(path, select(ravdess, "validation"))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
