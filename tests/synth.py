"""Synthetic audio for tests: voiced tones whose pitch and loudness depend on the class."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ser.labels import LABELS

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RAVDESS_16K = SHARED / "data" / "ravdess-speech-16k"
RAVDESS_48K_SAMPLE = SHARED / "data" / "ravdess-speech-48k-sample"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"

needs_ravdess = pytest.mark.skipif(
    not RAVDESS_16K.is_dir(), reason=f"RAVDESS corpus not found at {RAVDESS_16K}"
)


def voiced(
    f0: float, seconds: float, rate: int = 16_000, amplitude: float = 0.3, seed: int = 0
) -> np.ndarray:
    """A buzzy harmonic tone with vibrato, syllable-like amplitude bursts and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t + rng.uniform(0, 6)) ** 2
    noise = 0.01 * rng.standard_normal(t.size)
    signal = amplitude * envelope * tone / 2.6 + noise
    return signal.astype(np.float32)


def class_signal(label_index: int, seconds: float, seed: int, rate: int = 16_000) -> np.ndarray:
    """Class ``label_index`` as pitch (110-330 Hz) and loudness (0.05-0.6) that rise with it."""
    rng = np.random.default_rng(seed)
    f0 = 110 * 2 ** (label_index / 5) * rng.uniform(0.97, 1.03)
    amplitude = 0.05 + 0.08 * label_index * rng.uniform(0.9, 1.1)
    return voiced(f0, seconds, rate, amplitude, seed)


def write_corpus(
    root: Path, per_split: dict[str, int], seconds: float = 1.0, labels=LABELS
) -> Path:
    """WAV files for every class and split plus ``manifest.csv``; returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    rows, seed = [], 0
    for split, count in per_split.items():
        for index, label in enumerate(labels):
            for n in range(count):
                seed += 1
                name = f"{split}-{label}-{n}.wav"
                sf.write(root / name, class_signal(index, seconds, seed), 16_000)
                rows.append(
                    {"path": name, "label": label, "speaker": f"spk{n % 4}", "split": split}
                )
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "speaker", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def write_voiced(
    path: Path, seconds: float = 1.0, f0: float = 150.0, rate: int = 16_000, **kwargs
) -> Path:
    """A :func:`voiced` clip written to ``path`` (folders created); ``kwargs`` go to sf.write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, voiced(f0, seconds, rate), rate, **kwargs)
    return path


def write_ffmpeg(
    path: Path,
    signal: np.ndarray,
    rate: int,
    codec: str,
    *,
    container: str | None = None,
    codec_rate: int | None = None,
    bit_rate: int | None = None,
) -> Path:
    """Encode ``signal`` (``[samples]`` or ``[channels, samples]``) with FFmpeg through PyAV.

    ``codec_rate`` is the rate the codec runs at (Opus 48 kHz, AMR 8 kHz); PyAV's encoder
    converts the frames to it.
    """
    import av

    planes = np.atleast_2d(np.asarray(signal, np.float32))
    layout = {1: "mono", 2: "stereo"}[planes.shape[0]]
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=codec_rate or rate, layout=layout)
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        for start in range(0, planes.shape[1], 4096):
            part = np.ascontiguousarray(planes[:, start : start + 4096])
            frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480),
           (570, 840, 2410), (660, 1720, 2410), (440, 1020, 2240), (390, 1990, 2550))  # fmt: skip


def speechlike(seconds: float, seed: int = 0, f0: float = 120.0, rate: int = 16_000) -> np.ndarray:
    """Syllables of 0.12-0.3 s: a glottal pulse train with falling pitch through three vowel
    formants, short gaps between them. Silero VAD takes it for speech (frame probabilities
    mostly above 0.9 for the seeds the tests use), unlike :func:`voiced`'s steady buzz."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out, position = np.zeros(n), 0
    while position < n:
        length = min(int(rate * rng.uniform(0.12, 0.3)), n - position)
        t = np.arange(length) / rate
        pitch = f0 * rng.uniform(0.85, 1.2) * (1 - 0.3 * t)
        pitch = pitch * np.clip(1 + 0.02 * rng.standard_normal(length), 0.9, 1.1)
        pulses = np.diff(np.floor(np.cumsum(pitch) / rate), prepend=0)
        y = lfilter([1.0], [1.0, -0.97], pulses)
        for formant, bandwidth in zip(
            _VOWELS[rng.integers(len(_VOWELS))], (60, 90, 120), strict=True
        ):
            r, theta = np.exp(-np.pi * bandwidth / rate), 2 * np.pi * formant / rate
            y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
        y = y * np.minimum(1, np.minimum(t, t[::-1]) / 0.03)
        out[position : position + length] = y / (np.abs(y).max() + 1e-9) * rng.uniform(0.15, 0.3)
        position += length + int(rate * rng.uniform(0.03, 0.1))
    return (out + 0.001 * rng.standard_normal(n)).astype(np.float32)


def bursts(
    spans: list[tuple[float, float]], seconds: float, seed: int = 0, rate: int = 16_000
) -> np.ndarray:
    """:func:`speechlike` bursts at ``spans`` (seconds) in quiet noise, ``seconds`` long."""
    rng = np.random.default_rng(seed + 1000)
    signal = (0.001 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
    for index, (start, end) in enumerate(spans):
        burst = speechlike(end - start, seed=seed + index, rate=rate)
        signal[int(start * rate) : int(start * rate) + burst.size] += burst
    return signal
