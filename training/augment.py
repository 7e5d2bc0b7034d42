"""Training-time views of a clip: random 4 s crops, additive noise and time stretch.

As in the reference study each augmentation fires with probability 0.2: noise with an
amplitude up to 1% of the clip's peak, and a tempo change of up to +-10% (pitch kept, librosa's
phase vocoder).

Recordings are rarely as clean as acted studio clips: a room's tone (noise whose energy falls
with frequency) and mains hum sit under and between the speech. ``background_p`` (off by
default, ``ser-train neural --augment-background P``) adds such a background to that share of
the views: noise coloured by a random one-pole low-pass (white to brown), with a 50 or 60 Hz hum
and its harmonics half of the time, at a speech-to-background ratio drawn from
``background_snr_db``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, repr=False)
class Augmentation:
    noise_p: float = 0.2
    noise_peak_fraction: float = 0.01
    stretch_p: float = 0.2
    stretch_max: float = 0.10
    background_p: float = 0.0
    background_snr_db: tuple[float, float] = (5.0, 35.0)

    def __repr__(self) -> str:
        """Part of every cached view's key: without a background it is what it was before
        backgrounds existed, so those caches stay valid."""
        fields = ["noise_p", "noise_peak_fraction", "stretch_p", "stretch_max"]
        if self.background_p:
            fields += ["background_p", "background_snr_db"]
        return f"Augmentation({', '.join(f'{name}={getattr(self, name)!r}' for name in fields)})"

    def apply(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() < self.stretch_p:
            import librosa

            rate = 1.0 + rng.uniform(-self.stretch_max, self.stretch_max)
            signal = librosa.effects.time_stretch(signal, rate=rate).astype(np.float32)
        if rng.random() < self.noise_p:
            peak = float(np.abs(signal).max())
            amplitude = rng.uniform(0, self.noise_peak_fraction) * peak
            signal = signal + amplitude * rng.standard_normal(signal.size).astype(np.float32)
        if self.background_p and rng.random() < self.background_p:
            signal = signal + room_background(signal, rng, self.background_snr_db)
        return signal


def room_background(
    signal: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float], rate: int = 16_000
) -> np.ndarray:
    """Coloured noise (and sometimes mains hum) scaled to a random ratio below the clip's speech.

    The speech level is the RMS of the clip's frames within 35 dB of its loudest, so the
    silence around an acted clip does not count as speech.
    """
    from scipy.signal import lfilter

    pole = rng.uniform(0.0, 0.99)
    noise = lfilter([1.0 - pole], [1.0, -pole], rng.standard_normal(signal.size))
    if rng.random() < 0.5:
        t = np.arange(signal.size) / rate
        mains = 50.0 if rng.random() < 0.5 else 60.0
        phase = rng.uniform(0, 2 * np.pi)
        hum = sum(np.sin(2 * np.pi * k * mains * t + k * phase) / k for k in (1, 2, 3))
        noise = noise / (np.sqrt(np.mean(noise**2)) + 1e-12) + rng.uniform(0.5, 2.0) * hum
    frames = signal[: signal.size // 512 * 512].reshape(-1, 512)
    if not frames.size:
        return np.zeros_like(signal)
    energy = (frames.astype(np.float64) ** 2).mean(axis=1)
    loud = energy[energy >= energy.max() * 10 ** (-35 / 10)]
    speech_rms = np.sqrt(loud.mean()) if loud.size else 0.0
    target = speech_rms * 10 ** (-rng.uniform(*snr_db) / 20)
    scale = target / (np.sqrt(np.mean(noise**2)) + 1e-12)
    return (scale * noise).astype(np.float32)


def random_crop(signal: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``length``-sample crop; a shorter signal is placed at a random offset in zeros."""
    if signal.size >= length:
        start = int(rng.integers(0, signal.size - length + 1))
        return signal[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - signal.size + 1))
    out[start : start + signal.size] = signal
    return out
