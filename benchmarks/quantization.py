"""Which reduced-precision graph to ship: accuracy, batch invariance and speed of each candidate.

    python benchmarks/quantization.py --source runs/whisper-pooled [--data RAVDESS_DIR]
    python benchmarks/quantization.py --source models/whisper-pooled.onnx

From a neural checkpoint (or an exported graph: a dynamic int8 one is first turned back into
float MatMuls by ``dequantize_dynamic_int8``) it takes the float32 graph and derives each
candidate: dynamic int8 (ONNX Runtime's ``quantize_dynamic``, the previous default), static
int8 (QDQ, activation scales calibrated on training windows) and 8-bit weights with per-row
activation quantisation (MatMulNBits, ``ser-export --quantize int8``). For each it prints:

- validation and test accuracy on centred 4 s windows (actors 21-22 and 23-24);
- the batch-invariance gate on the test windows: each alone against shuffled batches of 1, 16
  and 64 (max |dp|, labels changed);
- files per second end to end (``run_scoring``, what ``ser-batch score`` runs) over ``--speed``
  files (default all 1,440 clips), median of ``--repeats`` runs, all candidates in one process.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
from ser.batch.discovery import discover
from ser.batch.run import RunOptions, run_scoring
from ser.corpus import read_ravdess, select
from ser.export.invariance import batch_invariance, session_runner
from ser.export.neural import export_neural, parity_inputs
from ser.export.onnx_io import read_metadata
from ser.export.optimize import (
    WEIGHT_BLOCK,
    dequantize_dynamic_int8,
    quantize_dynamic_int8,
    quantize_int8,
    quantize_static_int8,
)

from common import RAVDESS_16K, describe_machine


@click.command()
@click.option("--source", required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--calibration", default=128, show_default=True, help="Training windows (static).")
@click.option("--speed", default=1440, show_default=True, help="Files for end to end (0: skip).")
@click.option("--repeats", default=1, show_default=True)
@click.option("--blocks", default="32,64,128", show_default=True, help="MatMulNBits block sizes.")
def main(source: Path, data: Path, calibration: int, speed: int, repeats: int, blocks: str) -> None:
    clips = read_ravdess(data)
    rng = np.random.default_rng(0)
    train = select(clips, "train")
    chosen = [train[i] for i in sorted(rng.choice(len(train), calibration, replace=False))]
    sets = {split: select(clips, split) for split in ("validation", "test")}
    files = [found.path for found in discover([data])][:speed] if speed else []

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        fp32 = _float_graph(source, folder)
        metadata = read_metadata(fp32)
        labels = list(metadata.labels)
        window = round(metadata.window_s * metadata.sample_rate)
        windows = {split: parity_inputs(found, window) for split, found in sets.items()}
        candidates: list[tuple[str, Callable[[], onnx.ModelProto]]] = [
            ("float32", lambda: fp32),
            ("int8 dynamic (quantize_dynamic, previous default)",
             lambda: quantize_dynamic_int8(fp32)),
            (f"int8 static QDQ ({calibration} training windows)",
             lambda: quantize_static_int8(fp32, parity_inputs(chosen, window))),
        ]  # fmt: skip
        candidates += [
            (f"int8 weights in blocks of {size}, per-row activations (MatMulNBits)"
             + (", --quantize int8" if size == WEIGHT_BLOCK else ""),
             lambda size=size: quantize_int8(fp32, block_size=size))
            for size in map(int, blocks.split(","))
        ]  # fmt: skip
        targets = {s: np.array([labels.index(c.label) for c in sets[s]]) for s in sets}
        print(f"source: {source}; data: {data}; machine: {describe_machine()}")
        print(f"end to end: {len(files)} files, batch size 16, 2 workers, median of {repeats}")
        print("| graph | size MB | validation acc | test acc | batch invariance (test windows) "
              "| files/s end to end |\n|---|---|---|---|---|---|")  # fmt: skip
        for name, build in candidates:
            started = time.perf_counter()
            model = build()
            path = folder / "candidate.onnx"
            onnx.save(model, path)
            built = time.perf_counter() - started
            run = session_runner(str(path), "audio", "probs")
            accuracy = {s: _accuracy(run, windows[s], targets[s]) for s in windows}
            invariance = batch_invariance(run, windows["test"])
            rate = _files_per_second(path, files, folder, repeats) if files else float("nan")
            verdict = "passes" if invariance.ok else "FAILS"
            print(
                f"| {name} | {path.stat().st_size / 1e6:.1f} | {accuracy['validation']:.3f} | "
                f"{accuracy['test']:.3f} | {verdict}: max dp {invariance.max_abs_diff:.1e}, "
                f"{invariance.label_changes} labels changed | {rate:.1f} |",
                flush=True,
            )
            print(f"  (built in {built:.0f} s)", file=sys.stderr)


def _float_graph(source: Path, folder: Path) -> onnx.ModelProto:
    if source.is_dir():
        export_neural(source, folder / "fp32.onnx")
        return onnx.load(folder / "fp32.onnx")
    model = onnx.load(source)
    if any(node.op_type == "MatMulInteger" for node in model.graph.node):
        return dequantize_dynamic_int8(model)
    return model


def _accuracy(run, windows: np.ndarray, targets: np.ndarray) -> float:
    probs = np.concatenate([run(windows[i : i + 16]) for i in range(0, len(windows), 16)])
    return float((probs.argmax(axis=1) == targets).mean())


def _files_per_second(model: Path, files: list[Path], folder: Path, repeats: int) -> float:
    rates = []
    for repeat in range(repeats):
        options = RunOptions(output=str(folder / f"r{repeat}.csv"), model=str(model))
        started = time.perf_counter()
        run_scoring(files, options)
        rates.append(len(files) / (time.perf_counter() - started))
    return statistics.median(rates)


if __name__ == "__main__":
    main()
