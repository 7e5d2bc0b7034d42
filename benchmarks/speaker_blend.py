"""Speaker mode as a blend: the plain and the speaker-normalised probabilities averaged.

    python benchmarks/speaker_blend.py [--model NAME_OR_PATH]

Scores RAVDESS actors 21-22 (validation) and nEMO's validation speaker IC0 with ``ser-batch
score`` twice, plain and in speaker mode (``--speaker-from folder``; nEMO's manifest as the
``--speakers`` table), then prints each validation split's accuracy for the plain weights
``WEIGHTS`` (1: plain mode, 0: speaker mode). The weight with the best mean of the two
validation accuracies is chosen, and only then are the test splits (RAVDESS 23-24, nEMO SM0)
scored, for that weight and for the two modes alone.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ser.corpus import load_corpus, select
from ser.models import DEFAULT_MODEL

from common import NEMO, RAVDESS_16K, describe_machine

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def scored(model: str, data: Path, split: str, speaker: bool, folder: Path) -> dict[str, dict]:
    """``ser-batch score`` over a split's clips: each resolved path's row."""
    clips = select(load_corpus(data), split)
    listing = folder / f"{data.stem}-{split}.txt"
    listing.write_text("".join(f"{clip.path.resolve()}\n" for clip in clips))
    report = folder / f"{data.stem}-{split}-{'speaker' if speaker else 'plain'}.csv"
    who = ["--speaker-from", "folder"] if data == RAVDESS_16K else ["--speakers", str(data)]
    command = [sys.executable, "-m", "ser.batch", "score", "--files-from", str(listing),
               "-o", str(report), "--model", model, *(who if speaker else [])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ser-batch failed ({done.returncode}): {done.stderr[-2000:]}")
    with report.open() as handle:
        rows = {str(Path(row["path"]).resolve()): row for row in csv.DictReader(handle)}
    return {str(clip.path.resolve()): {**rows[str(clip.path.resolve())], "truth": clip.label}
            for clip in clips}  # fmt: skip


def probabilities(rows: dict[str, dict]) -> tuple[np.ndarray, list[str], list[str]]:
    columns = [key for key in next(iter(rows.values())) if key.startswith("p_")]
    probs = np.array([[float(row[c]) for c in columns] for row in rows.values()])
    return probs, [c[2:] for c in columns], [row["truth"] for row in rows.values()]


def accuracy(plain: dict, speaker: dict, weight: float) -> float:
    p, labels, truth = probabilities(plain)
    s, _, _ = probabilities(speaker)
    mixed = weight * p + (1 - weight) * s
    return float(np.mean([labels[k] == t for k, t in zip(mixed.argmax(1), truth, strict=True)]))


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
def main(model: str) -> None:
    print(f"model: {model}; machine: {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="ser-blend-") as tmp:
        folder = Path(tmp)
        corpora = (("RAVDESS", RAVDESS_16K), ("nEMO", NEMO))
        validation = {
            name: [scored(model, data, "validation", mode, folder) for mode in (False, True)]
            for name, data in corpora
        }
        means = {}
        for weight in WEIGHTS:
            cells = {name: accuracy(*validation[name], weight) for name in validation}
            means[weight] = float(np.mean(list(cells.values())))
            print(f"plain weight {weight:.2f}: validation RAVDESS {cells['RAVDESS']:.3f}, "
                  f"nEMO {cells['nEMO']:.3f}, mean {means[weight]:.4f}", flush=True)  # fmt: skip
        chosen = max(WEIGHTS, key=lambda w: (means[w], w))  # ties: the plainer
        print(f"chosen on validation: plain weight {chosen:.2f}")
        for name, data in corpora:
            plain, speaker = (scored(model, data, "test", mode, folder) for mode in (False, True))
            modes = (("plain", 1.0), ("speaker", 0.0), ("blend", chosen))
            cells = [f"{label} {accuracy(plain, speaker, w):.3f}" for label, w in modes]
            print(f"test {name}: " + ", ".join(cells), flush=True)


if __name__ == "__main__":
    main()
