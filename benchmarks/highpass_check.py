"""Does a high-pass filter at scoring undo what the long-recordings background costs?

    python benchmarks/highpass_check.py [--split validation] [--cutoff 100]

Scores each clip of the split whole (its centred window, as ``benchmarks/accuracy.py``),
clean and with ``benchmarks/long_recordings.py``'s room tone or white noise added, each with
and without a 4th-order Butterworth high-pass (removing the room tone's 50 Hz hum and most of
its low-frequency noise), and prints the accuracy of each.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
from long_recordings import background
from scipy.signal import butter, sosfilt

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import center_window, load_audio
from ser.batch.session import ScoringModel
from ser.corpus import read_ravdess, select
from ser.models import DEFAULT_MODEL

from common import RAVDESS_16K, describe_machine


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--split", type=click.Choice(["test", "validation"]), default="validation")
@click.option("--cutoff", default=100.0, show_default=True, help="High-pass corner, Hz.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
def main(data: Path, split: str, cutoff: float, model: str) -> None:
    clips = select(read_ravdess(data), split)
    scorer = ScoringModel(model)
    window = round(scorer.metadata.window_s * scorer.metadata.sample_rate)
    sos = butter(4, cutoff, "highpass", fs=16_000, output="sos")
    rng = np.random.default_rng(1)
    names = ("clean", "room tone", "white noise")
    hits: dict[str, list[bool]] = {}
    for clip in clips:
        signal = load_audio(clip.path)
        versions = (signal, signal + background(signal.size, "room", rng),
                    signal + background(signal.size, "noise", rng))  # fmt: skip
        rows, keys = [], []
        for name, version in zip(names, versions, strict=True):
            filtered = sosfilt(sos, version).astype(np.float32)
            rows += [center_window(version, window), center_window(filtered, window)]
            keys += [name, f"{name}, high-passed at {cutoff:g} Hz"]
        for key, probs in zip(keys, scorer.predict(np.stack(rows)), strict=True):
            hits.setdefault(key, []).append(scorer.labels[int(np.argmax(probs))] == clip.label)
    print(f"data: {data} split={split} ({len(clips)} clips); machine: {describe_machine()}")
    for key, values in hits.items():
        print(f"{key}: {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
