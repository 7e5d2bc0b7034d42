"""Weights for an ensemble of two exported models, judged on both corpora's validation speakers.

    python benchmarks/ensemble_weights.py --first A.onnx --second B.onnx [--split validation]

Scores RAVDESS (actors 21-22 validation, 23-24 test) and nEMO (IC0 validation, SM0 test) with
each model as ``ser-batch`` does, then prints, for each weight of the first model, every split's
accuracy and UAR of the weighted mean probabilities. The rule that chose the shipped weight: the
best mean of the two validation UARs (the test columns are printed, never used to choose). The
first model runs the second one's encoder weights, as ``ser-export ensemble SECOND FIRST`` will
run it. ``--split validation`` scores the validation speakers only, for choices made before
any test figure is seen.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
from ser.batch.frontends import frontend_for
from ser.batch.scoring import score_file
from ser.batch.session import ScoringModel
from ser.corpus import label_indices, load_corpus, select
from ser.export.ensemble import share_encoder
from ser.training.metrics import uar

from common import NEMO, RAVDESS_16K, describe_machine

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def split_probs(model: str, data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    scorer = ScoringModel(model)
    frontend = frontend_for(scorer.metadata)
    clips = select(load_corpus(data), split)
    probs = np.stack([score_file(clip.path, scorer, frontend).probs for clip in clips])
    return probs, label_indices(clips, scorer.labels)


@click.command()
@click.option("--first", required=True, help="The model whose weight is swept.")
@click.option("--second", required=True)
@click.option(
    "--split", "splits", multiple=True, type=click.Choice(["validation", "test"]),
    default=("validation", "test"), show_default=True,
)  # fmt: skip
def main(first: str, second: str, splits: tuple[str, ...]) -> None:
    model = onnx.load(first)
    replaced = share_encoder(model, onnx.load(second))
    print(f"first: {first} ({replaced} encoder weights from the second); second: {second}; "
          f"machine: {describe_machine()}")  # fmt: skip
    first = str(Path(tempfile.mkdtemp()) / "first.onnx")
    onnx.save(model, first)
    scored = {}
    for name, data, split in [(name, data, split) for name, data in (("RAVDESS", RAVDESS_16K),
                              ("nEMO", NEMO)) for split in splits]:  # fmt: skip
        (a, truth), (b, _) = split_probs(first, data, split), split_probs(second, data, split)
        scored[name, split] = (a, b, truth)
    for weight in WEIGHTS:
        cells, validation = [], []
        for (name, split), (a, b, truth) in scored.items():
            mixed = weight * a + (1 - weight) * b
            score = uar(truth, mixed.argmax(1))
            validation += [score] if split == "validation" else []
            cells.append(
                f"{name} {split} acc={np.mean(mixed.argmax(1) == truth):.3f} UAR={score:.3f}"
            )
        print(
            f"weight {weight:.2f}: mean validation UAR {np.mean(validation):.4f}; "
            + "; ".join(cells)
        )


if __name__ == "__main__":
    main()
