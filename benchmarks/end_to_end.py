"""End-to-end scoring against the model alone, on the same files.

    python benchmarks/end_to_end.py [--model NAME_OR_PATH] [--data DIR] [--workers 2]

"Model alone" decodes and windows every file first, then times only the ONNX Runtime calls on
those windows (same batch size). "End to end" times a whole ``ser-batch score`` run on the same
files: discovery, decoding and resampling in worker threads, inference, journal and report.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import load_audio
from ser.batch.discovery import discover
from ser.batch.frontends import frontend_for
from ser.batch.run import RunOptions, run_scoring
from ser.batch.session import ScoringModel
from ser.models import DEFAULT_MODEL

from common import RAVDESS_16K, describe_machine

TEST_ACTORS = RAVDESS_16K


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--data", multiple=True, type=click.Path(exists=True, path_type=Path),
              default=[TEST_ACTORS / "Actor_23", TEST_ACTORS / "Actor_24"])  # fmt: skip
@click.option("--workers", default=2, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
def main(model: str, data: tuple[Path, ...], workers: int, batch_size: int) -> None:
    scorer = ScoringModel(model)
    frontend = frontend_for(scorer.metadata)
    files = [found.path for found in discover(data)]
    rows = np.concatenate(
        [frontend.inputs(load_audio(path, scorer.metadata.sample_rate)).rows for path in files]
    )
    scorer.predict(rows[:batch_size])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        scorer.predict(rows[start : start + batch_size])
    model_only = len(files) / (time.perf_counter() - started)

    with tempfile.TemporaryDirectory() as folder:
        options = RunOptions(output=str(Path(folder) / "r.csv"), model=model, workers=workers,
                             batch_size=batch_size)  # fmt: skip
        started = time.perf_counter()
        run_scoring(list(data), options)
        end_to_end = len(files) / (time.perf_counter() - started)

    print(f"\nmodel: {scorer.path.name}; files: {len(files)} ({len(rows)} model inputs) from "
          f"{', '.join(str(d) for d in data)}")  # fmt: skip
    print(f"machine: {describe_machine()}; workers {workers}, batch size {batch_size}")
    print("| measure | files per second |\n|---|---|")
    print(f"| model alone (decoded windows, ONNX Runtime only) | {model_only:.2f} |")
    print(f"| end to end (ser-batch score) | {end_to_end:.2f} |")
    print(f"| end to end / model alone | {end_to_end / model_only:.1%} |")


if __name__ == "__main__":
    main()
