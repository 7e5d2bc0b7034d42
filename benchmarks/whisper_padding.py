"""Whisper's encoder on a 4 s window as it is, or padded to its 30 s context as it was trained.

    python benchmarks/whisper_padding.py [--backbone ../shared/models/whisper-tiny.en] [--seeds 3]

For both variants: encoder seconds per 4 s window (batch of 16), and the test accuracy of the
pooled head trained on them (no augmentation, one view per training clip, so the comparison is
about the frontend alone).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ser.corpus import read_ravdess
from ser.training.backbones import load_backbone
from ser.training.cache import default_cache_dir
from ser.training.neural import NeuralConfig, encode_corpus, train_head

from common import describe_machine, neural_run_options


@click.command()
@neural_run_options
def main(backbone: str, data: Path, seeds: int, epochs: int) -> None:
    clips = read_ravdess(data)
    print(f"machine: {describe_machine()}\nbackbone: {backbone}\n")
    print("| input to the encoder | encoder s per 4 s window | test accuracy (pooled head) |")
    print("|---|---|---|")
    for pad in (False, True):
        encoder = load_backbone(backbone, whisper_pad_30s=pad)
        probe = torch.randn(16, 64_000) * 0.1
        with torch.inference_mode():
            encoder(probe[:2])
            started = time.perf_counter()
            encoder(probe)
        per_window = (time.perf_counter() - started) / 16
        config = NeuralConfig(backbone=backbone, whisper_pad_30s=pad, augment=False, views=1,
                              epochs=epochs)  # fmt: skip
        corpus = encode_corpus(clips, default_cache_dir(), config, encoder)
        accuracies = []
        for seed in range(seeds):
            with tempfile.TemporaryDirectory() as out:
                run = train_head(corpus, Path(out), replace(config, seed=seed))
            accuracies.append(run.metrics["test"]["accuracy"])
        spread = statistics.stdev(accuracies) if seeds > 1 else 0.0
        name = "padded to 30 s" if pad else "the 4 s window as it is"
        print(f"| {name} | {per_window:.3f} | {statistics.mean(accuracies):.3f} ± {spread:.3f} "
              f"(seeds 0-{seeds - 1}) |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
