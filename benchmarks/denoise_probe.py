"""Probe: would denoising long recordings before scoring help? Measured, not shipped.

    python benchmarks/denoise_probe.py [--split validation] [--model M] [--prop 1.0 --prop 0.8]

Builds the recordings of ``benchmarks/long_recordings.py`` (``--files 24 --extra-single 12``),
finds speech with the shipped Silero VAD, then removes stationary noise from each recording
with noisereduce's spectral gating (``pip install noisereduce``; not a dependency of ser), the
noise profile taken from the recording's own non-speech (the VAD's complement, up to 30 s), as
a scorer could do for a call with room tone. Every region is scored in process with 1 s of
context (as ``--segmentation vad`` does, ``benchmarks/vad_inputs.py`` variant ``1``), with the
VAD run on the original and on the denoised audio. Prints utterance accuracy and single-emotion
file accuracy for each.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from long_recordings import RATE, build, recording_options
from vad_inputs import Scorer, evaluate, vad_spans

from ser.audio import load_audio
from ser.corpus import read_ravdess, select
from ser.vad import SileroVad

from common import describe_machine

NOISE_PROFILE_S = 30


def denoise(signal: np.ndarray, spans: list[tuple[int, int]], prop: float) -> np.ndarray:
    """``signal`` gated against the noise of its non-speech samples."""
    import noisereduce

    speech = np.zeros(signal.size, bool)
    for start, end in spans:
        speech[start:end] = True
    noise = signal[~speech][: NOISE_PROFILE_S * RATE]
    cleaned = noisereduce.reduce_noise(
        y=signal, sr=RATE, y_noise=noise, stationary=True, prop_decrease=prop
    )
    return cleaned.astype(np.float32)


@click.command()
@recording_options(split="validation")
@click.option("--prop", "props", multiple=True, type=float, default=(1.0, 0.8), show_default=True,
              help="noisereduce's prop_decrease: how much of the noise to take out.")  # fmt: skip
def main(data: Path, split: str, files: int, seed: int, model: str, props: tuple[float]) -> None:
    clips = select(read_ravdess(data), split)
    scorer, vad = Scorer(model), SileroVad()
    print(f"data: {data} split={split} ({len(clips)} clips); model {model}; {describe_machine()}")
    with tempfile.TemporaryDirectory(prefix="ser-denoise-") as tmp:
        recordings = build(clips, files, seed, Path(tmp), extra_single=12)
        signals = {r.name: load_audio(Path(tmp) / r.name) for r in recordings}
    spans = {name: vad_spans(signal, vad) for name, signal in signals.items()}
    utterances, files_right, single = evaluate(recordings, signals, spans, "1", scorer)
    print(f"original: utterance accuracy {utterances:.3f}, files {files_right:.3f} of {single}")
    for prop in props:
        started = time.perf_counter()
        cleaned = {name: denoise(signal, spans[name], prop) for name, signal in signals.items()}
        took = time.perf_counter() - started
        found_again = {name: vad_spans(signal, vad) for name, signal in cleaned.items()}
        for where, regions in (("original", spans), ("denoised", found_again)):
            utterances, files_right, single = evaluate(recordings, cleaned, regions, "1", scorer)
            print(
                f"denoised (prop {prop}), VAD on the {where} audio: utterance accuracy "
                f"{utterances:.3f}, files {files_right:.3f} of {single}; denoising {took:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
