"""The one audio path every stage uses: decode, mix down, resample, window.

Training, export and scoring all call :func:`load_audio` and :func:`prepare_signal`, so the
signal a model was trained on and the signal it scores can never be prepared differently.
"""

from __future__ import annotations

import errno
import os
import stat
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
MIN_SAMPLE_RATE = 1_000
"""Below this no recording carries speech; such a header would cost minutes of resampling."""
MAX_FRAMES_PER_BYTE = 10_000
"""Well above any real encoder (silent FLAC packs about 350 frames per byte)."""


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any file libsndfile reads into mono float32 at ``sample_rate``.

    Raises:
        AudioError: naming the file, when it cannot be read or holds no usable samples.
    """
    path = Path(path)
    check_header(path)
    try:
        signal, file_rate = sf.read(_descriptor(path), dtype="float32", always_2d=True)
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
    info = check_header(path)
    try:
        blocks = sf.blocks(
            _descriptor(path), blocksize=max(1, int(block_s * info.samplerate)), dtype="float32",
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
    info = check_header(path)
    return info.frames / info.samplerate


def check_header(path: str | Path) -> sf._SoundFileInfo:
    """The file's header, refused when it declares what no recording holds.

    A sample rate under :data:`MIN_SAMPLE_RATE` or more frames than :data:`MAX_FRAMES_PER_BYTE`
    per byte of the file would cost minutes of resampling or gigabytes of buffer before any
    sample proved the header wrong, so it is refused first.

    Raises:
        AudioError: naming the file, when the header cannot be read or is absurd.
    """
    try:
        fd = _descriptor(path)
        size = os.fstat(fd).st_size
        info = sf.info(fd)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
    if info.samplerate < MIN_SAMPLE_RATE:
        raise AudioError(
            f"{path}: header declares a sample rate of {info.samplerate} Hz "
            f"(under {MIN_SAMPLE_RATE} Hz); refused"
        )
    if info.frames > MAX_FRAMES_PER_BYTE * max(size, 1):
        raise AudioError(
            f"{path}: header declares {info.frames / info.samplerate / 3600:.1f} h of audio "
            f"in {size / 1000:.1f} kB; refused"
        )
    return info


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


def _descriptor(path: str | Path) -> int:
    """``path`` opened for libsndfile, which then closes it; only a regular file is opened.

    By descriptor, libsndfile takes any name the OS does (bytes that are not UTF-8, paths longer
    than its own limit of about 1 kB), and a FIFO or device swapped in since the file was found
    is refused here instead of blocking the read.

    Raises:
        OSError: when the file cannot be opened or is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd


def _one_line(error: BaseException) -> str:
    # libsndfile's own text, without soundfile's "Error opening <descriptor>: " prefix
    text = error.error_string if isinstance(error, sf.LibsndfileError) else str(error)
    return " ".join(text.split()) or type(error).__name__
