"""Peak memory of ``ser-batch score`` on one long file, for several lengths.

    python benchmarks/long_file_memory.py [--model NAME_OR_PATH] [--minutes 10,60,120]
        [--segmentation windows|vad]

Writes a voiced test signal of each length as 16 kHz 16-bit WAV in a temporary folder, scores it
in a fresh process and reads that process's peak resident memory (ru_maxrss). With a windowed
model the file is decoded and scored in blocks, so the peak should not grow with the length.
With ``--segmentation vad`` the signal is speech-like bursts of 1-6 s (``tests/synth.py``'s
``bursts``, which Silero VAD takes for speech) every 0.5-8 s in quiet noise, so that the VAD
finds utterances all through the file and every one of them is scored.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from ser.models import DEFAULT_MODEL

from common import describe_machine

RATE = 16_000


def write_speechlike_wav(path: Path, minutes: float) -> int:
    """Minute-long blocks of speech-like bursts between pauses; returns how many bursts."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from synth import bursts

    count = 0
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        for minute in range(int(minutes)):
            rng = np.random.default_rng(minute)
            spans, t = [], rng.uniform(0.5, 4.0)
            while t < 58.0:
                spans.append((t, min(t + rng.uniform(1.0, 6.0), 59.5)))
                t = spans[-1][1] + rng.uniform(0.5, 8.0)
            handle.write(bursts(spans, 60.0, seed=minute))
            count += len(spans)
    return count


def write_long_wav(path: Path, minutes: float) -> None:
    """Minute-long blocks of harmonic tones with changing pitch, written without holding it all."""
    rng = np.random.default_rng(0)
    t = np.arange(60 * RATE) / RATE
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        for _ in range(int(minutes)):
            f0 = rng.uniform(90, 300)
            block = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
            handle.write(
                (0.2 * block * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
            )


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--minutes", default="10,60,120", show_default=True)
@click.option("--segmentation", type=click.Choice(["windows", "vad"]), default="windows")
def main(model: str, minutes: str, segmentation: str) -> None:
    print(f"machine: {describe_machine()}; model: {model}; --segmentation {segmentation}")
    print("| file length | file size | wall time | peak memory (max RSS) |\n|---|---|---|---|")
    ser_batch = str(Path(sys.executable).with_name("ser-batch"))
    for length in (float(m) for m in minutes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            audio = Path(folder) / "long.wav"
            if segmentation == "vad":
                bursts = write_speechlike_wav(audio, length)
                print(f"{length:.0f} min: {bursts} bursts of speech-like sound", flush=True)
            else:
                write_long_wav(audio, length)
            command = [ser_batch, "score", str(audio), "-o", str(Path(folder) / "r.csv"),
                       "--model", model, "--segmentation", segmentation]  # fmt: skip
            started = time.perf_counter()
            child = subprocess.run([sys.executable, "-c", _MEASURE, *command],
                                   capture_output=True, text=True)  # fmt: skip
            wall = time.perf_counter() - started
            if child.returncode != 0:
                raise SystemExit(child.stderr)
            peak_mb = int(child.stdout.split()[-1]) / 1024  # Linux reports kilobytes
            size_mb = audio.stat().st_size / 1e6
            print(f"| {length:.0f} min | {size_mb:.0f} MB | {wall:.0f} s | {peak_mb:.0f} MB |",
                  flush=True)  # fmt: skip


# A fresh wrapper per measurement, so each peak belongs to one ser-batch process only.
_MEASURE = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


if __name__ == "__main__":
    main()
