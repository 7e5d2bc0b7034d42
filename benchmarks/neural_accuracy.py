"""Frozen-encoder heads on RAVDESS: test accuracy and UAR over seeds, with and without augmentation.

    python benchmarks/neural_accuracy.py [--backbone ../shared/models/whisper-tiny.en] [--seeds 3]

Trains on actors 1-20, selects the epoch on 21-22, tests on 23-24. The encoder runs once per
clip and view (cached); the training views are drawn once (view seed 0), and each seed changes
the head's initialisation, the balanced sampling and dropout. Prints one row per head and
augmentation setting: mean and standard deviation over seeds, and the wall time.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).parent))
from ser.corpus import read_ravdess
from ser.training.cache import default_cache_dir
from ser.training.neural import NeuralConfig, encode_corpus, train_head

from common import describe_machine, neural_run_options


@click.command()
@neural_run_options
@click.option("--heads", default="reference,pooled", show_default=True)
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
def main(
    backbone: str, data: Path, seeds: int, epochs: int, heads: str, cache_dir: Path | None
) -> None:
    clips = read_ravdess(data)
    cache = cache_dir or default_cache_dir()
    rows = []
    for augment in (False, True):
        base = NeuralConfig(backbone=backbone, augment=augment, epochs=epochs)
        started = time.perf_counter()
        corpus = encode_corpus(clips, cache, base)
        encode_s = time.perf_counter() - started
        for head in heads.split(","):
            accuracies, uars, walls, speedups = [], [], [], []
            for seed in range(seeds):
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as out:
                    run = train_head(corpus, Path(out), replace(base, head=head, seed=seed))
                walls.append(time.perf_counter() - started)
                accuracies.append(run.metrics["test"]["accuracy"])
                uars.append(run.metrics["test"]["uar"])
                speedups.append(run.metrics["timing"]["epoch_speedup"])
                line = f"{accuracies[-1]:.4f} UAR {uars[-1]:.4f} ({walls[-1]:.0f} s)"
                print(f"  {head} augment={augment} seed={seed}: test accuracy {line}", flush=True)
            rows.append((head, augment, accuracies, uars, walls, encode_s, speedups))

    print(f"\nbackbone: {backbone}\ndata: {data} (train 1-20, validation 21-22, test 23-24)")
    print(f"machine: {describe_machine()}\nepochs: {epochs}, seeds: 0-{seeds - 1}\n")
    print("| head | augmentation | test accuracy | test UAR | head training per seed | "
          "encoding (cache build) | epoch speed-up from the cache |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for head, augment, accuracies, uars, walls, encode_s, speedups in rows:
        cells = [head, "yes" if augment else "no", _spread(accuracies), _spread(uars),
                 f"{statistics.mean(walls):.0f} s", f"{encode_s:.0f} s",
                 f"{statistics.mean(speedups):.1f}x"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def _spread(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


if __name__ == "__main__":
    main()
