"""The one audio path every stage uses: decode, mix down, resample, window.

Training, export and scoring all call :func:`load_audio` and :func:`prepare_signal`, so the
signal a model was trained on and the signal it scores can never be prepared differently.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ser.errors import AudioError

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file libsndfile reads into mono float32 at ``sample_rate``.

    Raises:
        AudioError: naming the file, when it cannot be read or holds no usable samples.
    """
    path = Path(path)
    try:
        signal, file_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    try:
        return prepare_signal(signal, file_rate, sample_rate)
    except AudioError as error:
        raise AudioError(f"{path}: {error}") from None


def stream_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, block_s: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode a file block by block into mono float32 at ``sample_rate``.

    The same processing as :func:`load_audio` (mix down, soxr resampling with the same quality,
    NaN check), but memory stays at one block however long the file is.

    Raises:
        AudioError: naming the file, when it cannot be read or holds unusable samples.
    """
    path = Path(path)
    try:
        info = sf.info(str(path))
        blocks = sf.blocks(
            str(path), blocksize=max(1, int(block_s * info.samplerate)), dtype="float32",
            always_2d=True,
        )  # fmt: skip
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    resampler = None
    if info.samplerate != sample_rate:
        resampler = soxr.ResampleStream(info.samplerate, sample_rate, 1, "float32", quality="HQ")
    produced = 0
    try:
        for block in blocks:
            mono = block.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():
                raise AudioError(f"{path}: audio holds NaN or infinite samples")
            out = resampler.resample_chunk(mono) if resampler else mono
            produced += out.size
            if out.size:
                yield np.ascontiguousarray(out, dtype=np.float32)
        if resampler is not None:
            tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            produced += tail.size
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    if produced == 0:
        raise AudioError(f"{path}: no audio samples (empty file)")


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding the samples."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    return info.frames / info.samplerate if info.samplerate else 0.0


def prepare_signal(signal: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix ``signal`` (``[samples]`` or ``[samples, channels]``) to mono float32 at ``sample_rate``.

    Raises:
        AudioError: when the signal is empty or holds NaN or infinite samples.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim == 2:
        signal = signal.mean(axis=1, dtype=np.float32)
    elif signal.ndim != 1:
        raise AudioError(f"expected a 1-D or 2-D signal, got shape {signal.shape}")
    if signal.size == 0:
        raise AudioError("no audio samples (empty file)")
    if not np.isfinite(signal).all():
        raise AudioError("audio holds NaN or infinite samples")
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    if rate != sample_rate:
        signal = soxr.resample(signal, rate, sample_rate, quality="HQ").astype(np.float32)
        if signal.size == 0:
            raise AudioError("too short to resample (under one output sample)")
    return np.ascontiguousarray(signal, dtype=np.float32)


def center_window(signal: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or symmetrically zero-pad ``signal`` to exactly ``length`` samples."""
    if signal.size >= length:
        start = (signal.size - length) // 2
        return signal[start : start + length]
    pad = length - signal.size
    return np.pad(signal, (pad // 2, pad - pad // 2))


def split_windows(signal: np.ndarray, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``signal`` into windows of ``length`` samples every ``hop`` samples.

    A signal shorter than one window, and the short tail of a longer one, are zero-padded, so
    every sample is covered. Returns the windows ``[n, length]`` and each window's start sample.
    """
    if length <= 0 or hop <= 0:
        raise ValueError(f"window length and hop must be positive, got {length} and {hop}")
    if signal.size <= length:
        starts = np.zeros(1, dtype=np.int64)
    else:
        last = int(np.ceil((signal.size - length) / hop))
        starts = np.arange(last + 1, dtype=np.int64) * hop
    windows = np.zeros((starts.size, length), dtype=np.float32)
    for row, start in enumerate(starts):
        chunk = signal[start : start + length]
        windows[row, : chunk.size] = chunk
    return windows, starts


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
