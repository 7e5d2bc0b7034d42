"""Accuracy of an exported model on a corpus's test split, scored as ser-batch does.

    python benchmarks/accuracy.py [--model NAME_OR_PATH] [--data RAVDESS_DIR | MANIFEST.csv]

By default the RAVDESS test actors (23-24); ``--data ../shared/data/nemo-16k/manifest.csv``
scores nEMO's test speaker. Prints accuracy and UAR over the split (UAR over the classes the
split has), the model's own recorded figures, and the machine.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ser.batch.frontends import frontend_for
from ser.batch.scoring import score_file
from ser.batch.session import ScoringModel
from ser.corpus import load_corpus, select
from ser.models import DEFAULT_MODEL

from common import RAVDESS_16K, describe_machine

DEFAULT_DATA = RAVDESS_16K


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=DEFAULT_DATA)
@click.option("--split", default="test", show_default=True)
def main(model: str, data: Path, split: str) -> None:
    scorer = ScoringModel(model)
    frontend = frontend_for(scorer.metadata)
    clips = select(load_corpus(data), split)
    started = time.perf_counter()
    truth, predicted = [], []
    for clip in clips:
        result = score_file(clip.path, scorer, frontend)
        if not result.ok:
            raise SystemExit(f"{clip.path}: {result.error}")
        truth.append(scorer.labels.index(clip.label))
        predicted.append(int(result.probs.argmax()))
    wall = time.perf_counter() - started
    truth, predicted = np.array(truth), np.array(predicted)
    recalls = [(predicted[truth == k] == k).mean() for k in np.unique(truth)]
    kind = scorer.metadata.extra_json("model", scorer.metadata.frontend)
    print(f"model: {scorer.path.name} ({kind})")
    print(f"data: {data} split={split} clips={len(clips)}")
    print(f"machine: {describe_machine()}")
    print(f"accuracy={(truth == predicted).mean():.4f} UAR={np.mean(recalls):.4f} wall={wall:.1f}s")
    recorded = scorer.metadata.extra_json("test_metrics")
    if recorded:
        print(
            f"recorded at export, on the {recorded['n']} test clips of the corpus it was checked "
            f"on: accuracy={recorded['accuracy']} UAR={recorded['uar']}"
        )


if __name__ == "__main__":
    main()
