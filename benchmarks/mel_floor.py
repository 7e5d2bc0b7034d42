"""How much of the log-mel a quiet background moves, for several dynamic ranges.

    python benchmarks/mel_floor.py [--split validation] [--every 6]

Design input for ``--whisper-dynamic-range``: RAVDESS utterances of one split, cut to their
speech as ``long_recordings.py`` cuts them, each with and without that benchmark's two
backgrounds (white noise at about -60 dBFS, room tone); for each range, the share of mel bins
that the background moves by more than 1 dB once both spectrograms are floored at their own
peak minus the range; and the utterances' speech level.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from long_recordings import background, trim_to_speech

from ser.audio import load_audio
from ser.corpus import read_ravdess, select
from ser.training.backbones import LogMel

from common import RAVDESS_16K, describe_machine

RANGES_DB = (80, 70, 60, 50, 40)
ONE_DB = 0.025  # in the frontend's output, (log10 power + 4) / 4


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--split", default="validation", show_default=True)
@click.option("--every", default=6, show_default=True, help="Take every n-th clip of the split.")
def main(data: Path, split: str, every: int) -> None:
    from transformers import WhisperFeatureExtractor

    filters = WhisperFeatureExtractor(feature_size=80).mel_filters
    frontends = {r: LogMel(filters, dynamic_range_db=r) for r in RANGES_DB}
    clips = select(read_ravdess(data), split)[::every]
    rng = np.random.default_rng(0)
    levels = []
    print(f"data: {data} split={split} ({len(clips)} clips); machine: {describe_machine()}")
    for kind in ("noise", "room"):
        moved: dict[int, list[float]] = {r: [] for r in RANGES_DB}
        for clip in clips:
            speech = trim_to_speech(load_audio(clip.path))
            if kind == "noise":
                levels.append(10 * np.log10((speech.astype(np.float64) ** 2).mean()))
            noisy = speech + background(speech.size, kind, rng)
            pair = torch.from_numpy(np.stack([speech, noisy]))
            for range_db, frontend in frontends.items():
                with torch.inference_mode():
                    clean_mel, noisy_mel = frontend(pair)
                moved[range_db].append(((clean_mel - noisy_mel).abs() > ONE_DB).float().mean())
        shares = ", ".join(f"{r} dB {float(np.mean(v)):.2f}" for r, v in moved.items())
        print(f"{kind}: share of mel bins moved over 1 dB: {shares}")
    low, mid, high = np.percentile(levels, [10, 50, 90])
    print(f"speech level, dBFS RMS: 10th {low:.1f}, median {mid:.1f}, 90th {high:.1f}")


if __name__ == "__main__":
    main()
