"""Training-time views of a clip: random 4 s crops, additive noise and time stretch.

As in the reference study each augmentation fires with probability 0.2: noise with an
amplitude up to 1% of the clip's peak, and a tempo change of up to +-10% (pitch kept, librosa's
phase vocoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    noise_p: float = 0.2
    noise_peak_fraction: float = 0.01
    stretch_p: float = 0.2
    stretch_max: float = 0.10

    def apply(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.stretch_p:
            import librosa

            rate = 1.0 + rng.uniform(-self.stretch_max, self.stretch_max)
            signal = librosa.effects.time_stretch(signal, rate=rate).astype(np.float32)
        if rng.random() < self.noise_p:
            peak = float(np.abs(signal).max())
            amplitude = rng.uniform(0, self.noise_peak_fraction) * peak
            signal = signal + amplitude * rng.standard_normal(signal.size).astype(np.float32)
        return signal


def random_crop(signal: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop; a shorter signal is placed at a random offset in zeros."""
    if signal.size >= length:
        start = int(rng.integers(0, signal.size - length + 1))
        return signal[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - signal.size + 1))
    out[start : start + signal.size] = signal
    return out
