"""End-to-end scoring against the model alone, on the same files.

    python benchmarks/end_to_end.py [--model NAME_OR_PATH] [--data DIR ...] [--workers 2]

"Model alone" decodes and windows every file first, then times only the ONNX Runtime calls on
those windows (same batch size, after one warm-up batch). "End to end" times a whole
``run_scoring`` call (what ``ser-batch score`` runs) on the same files: model loading,
discovery, decoding in worker threads, inference, journal and report. Its start-up (loading
the model and its first batch) is a fixed cost, printed on its own. Each figure is the median
of ``--repeats`` runs.
"""

from __future__ import annotations

import statistics
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


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--data", multiple=True, type=click.Path(exists=True, path_type=Path),
              default=[RAVDESS_16K], show_default=True)  # fmt: skip
@click.option("--workers", default=2, show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--repeats", default=3, show_default=True)
def main(model: str, data: tuple[Path, ...], workers: int, batch_size: int, repeats: int) -> None:
    scorer = ScoringModel(model)
    frontend = frontend_for(scorer.metadata)
    files = [found.path for found in discover(data)]
    rows = np.concatenate(
        [frontend.inputs(load_audio(path, scorer.metadata.sample_rate)).rows for path in files]
    )
    started = time.perf_counter()
    scorer = ScoringModel(model)
    scorer.predict(rows[:batch_size])
    startup = time.perf_counter() - started

    model_only, end_to_end = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(rows), batch_size):
            scorer.predict(rows[start : start + batch_size])
        model_only.append(len(files) / (time.perf_counter() - started))
        with tempfile.TemporaryDirectory() as folder:
            options = RunOptions(output=str(Path(folder) / "r.csv"), model=model,
                                 workers=workers, batch_size=batch_size)  # fmt: skip
            started = time.perf_counter()
            run_scoring(list(data), options)
            end_to_end.append(len(files) / (time.perf_counter() - started))

    alone, whole = statistics.median(model_only), statistics.median(end_to_end)
    print(f"\nmodel: {scorer.path.name}; {len(files)} files ({len(rows)} model inputs) from "
          f"{', '.join(str(d) for d in data)}")  # fmt: skip
    print(f"machine: {describe_machine()}; workers {workers}, batch size {batch_size}; "
          f"median of {repeats} runs")  # fmt: skip
    print("| measure | files per second |\n|---|---|")
    print(f"| model alone (decoded windows, ONNX Runtime only) | {alone:.2f} |")
    print(f"| end to end (ser-batch score, start-up included) | {whole:.2f} |")
    print(f"| end to end / model alone | {whole / alone:.1%} |")
    print(f"start-up (load model, first batch): {startup:.2f} s per run")


if __name__ == "__main__":
    main()
