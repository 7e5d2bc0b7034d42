"""The one audio path every stage uses: decode, mix down, resample, window.

Training, export and scoring all call :func:`load_audio` (or :func:`stream_audio` for long files)
and :func:`prepare_signal`, so the signal a model was trained on and the signal it scores can
never be prepared differently. libsndfile (soundfile) decodes what it reads; everything else
(phone and video recordings: .m4a, .mp4, .aac, .webm, .amr, .wma, ...) goes through FFmpeg's
decoders via PyAV, the ``formats`` extra. Both paths open regular files only, by descriptor, mix
to mono the same way and resample with the same soxr settings.
"""

from __future__ import annotations

import errno
import functools
import importlib.util
import itertools
import math
import os
import stat
from collections.abc import Generator, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ser.errors import AudioError

SAMPLE_RATE = 16_000
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf"}
)
# Recordings from phones, browsers and video: taken by discovery even without the formats extra,
# so that they get an error row naming the install instead of being skipped silently.
COMMON_FFMPEG_EXTENSIONS = frozenset(
    {".m4a", ".mp4", ".aac", ".webm", ".amr", ".wma", ".3gp", ".mov", ".mkv", ".mka"}
)
FFMPEG_EXTENSIONS = COMMON_FFMPEG_EXTENSIONS | frozenset(
    {".m4b", ".3g2", ".awb", ".asf", ".wmv", ".ac3", ".eac3", ".dts", ".mp2", ".mpa", ".ape",
     ".tta", ".wv", ".avi", ".flv"}
)  # fmt: skip
HAS_FFMPEG = importlib.util.find_spec("av") is not None
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | (
    FFMPEG_EXTENSIONS if HAS_FFMPEG else COMMON_FFMPEG_EXTENSIONS
)
FORMATS_INSTALL = "pip install 'ser-toolkit[formats]'"
MIN_SAMPLE_RATE = 1_000
"""Below this no recording carries speech; such a header would cost minutes of resampling."""
NO_SAMPLES_IN_STREAM = "its audio stream holds no samples"
MAX_FRAMES_PER_BYTE = 10_000
"""Well above any real encoder (silent FLAC packs about 350 frames per byte)."""

_SOUNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, OSError, ValueError)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a whole file into mono float32 at ``sample_rate``.

    Raises:
        AudioError: naming the file, when it cannot be read or holds no usable samples.
    """
    with AudioFile(path) as audio:
        return audio.read(sample_rate)


def stream_audio(
    path: str | Path, sample_rate: int = SAMPLE_RATE, block_s: float = 30.0
) -> Iterator[np.ndarray]:
    """Decode a file block by block into mono float32 at ``sample_rate``.

    The same processing as :func:`load_audio` (mix down, soxr resampling with the same quality,
    NaN check), but memory stays at one block however long the file is, whichever decoder
    reads it.

    Raises:
        AudioError: naming the file, when it cannot be read or holds unusable samples.
    """
    path = Path(path)
    file_rate, blocks = AudioFile(path).blocks(block_s)
    if not file_rate:
        raise AudioError(f"{path}: {NO_SAMPLES_IN_STREAM}")
    resampler = None
    if file_rate != sample_rate:
        resampler = soxr.ResampleStream(file_rate, sample_rate, 1, "float32", quality="HQ")
    produced = 0
    try:
        for mono in blocks:
            problem = unusable_samples(mono)
            if problem:
                raise AudioError(f"{path}: {problem}")
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
    finally:
        blocks.close()
    if produced == 0:
        raise AudioError(f"{path}: no audio samples (empty file)")


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the file header, without decoding the samples.

    Only an FFmpeg-read file whose container states no duration (some browser recordings) is
    decoded to count its samples.
    """
    with AudioFile(path) as audio:
        return audio.duration()


class AudioFile:
    """A file opened once: its header checked, then read whole or block by block.

    libsndfile reads what it can through this one open; anything else goes to FFmpeg (PyAV).
    One open per file matters where files are short: opening and parsing a header costs about
    as much as decoding a 4 s FLAC, and scoring used to do it three times per file.

    A header that declares what no recording holds (a sample rate under
    :data:`MIN_SAMPLE_RATE`, more frames than :data:`MAX_FRAMES_PER_BYTE` per byte of the file)
    is refused before any sample is read, since it would cost minutes of resampling or
    gigabytes of buffer before a sample proved it wrong.

    Raises:
        AudioError: naming the file, when it cannot be opened as a regular file (no decoder
            could do better) or its header is absurd.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: sf.SoundFile | None = None
        self._refusal: BaseException | None = None
        self._whole_only = False
        try:
            fd = _descriptor(self.path)
        except OSError as error:
            raise AudioError(f"{self.path}: cannot decode audio ({_one_line(error)})") from None
        try:
            size = os.fstat(fd).st_size
            self._file = sf.SoundFile(fd)  # libsndfile closes the descriptor, even on failure
        except (sf.LibsndfileError, RuntimeError, OSError) as error:
            self._refusal = error
            return
        self._check_header(size)
        # libsndfile's MPEG decoder gives other samples when a file is read in more than one
        # call, and stops at the end of the first of joined MP3s: FFmpeg decodes them, where
        # installed; else one whole read (:meth:`blocks`), the only way libsndfile is exact
        self._whole_only = self._file.format == "MP3"
        if self._whole_only and _ffmpeg_installed():
            self.close()
            self._file = None

    def _check_header(self, size: int) -> None:
        rate, frames = self._file.samplerate, self._file.frames
        problem = ""
        if rate < MIN_SAMPLE_RATE:
            problem = f"a sample rate of {rate} Hz (under {MIN_SAMPLE_RATE} Hz)"
        elif frames > MAX_FRAMES_PER_BYTE * max(size, 1):
            problem = f"{_seconds(frames / rate)} of audio in {size / 1000:.1f} kB"
        if problem:
            self.close()
            raise AudioError(f"{self.path}: header declares {problem}; refused")

    def duration(self) -> float:
        """Seconds, from the header (an FFmpeg file without a stated duration is counted)."""
        if self._file is not None:
            return self._file.frames / self._file.samplerate
        with _FFmpegFile(self.path, self._refusal) as source:
            return source.duration()

    def read(self, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """The whole file, mono float32 at ``sample_rate`` (see :func:`prepare_signal`)."""
        if self._file is not None:
            file_rate, signal = self._file.samplerate, self._whole_mono()
        else:
            file_rate, blocks = _ffmpeg_blocks(self.path, None, self._refusal)
            if not file_rate:
                raise AudioError(f"{self.path}: {NO_SAMPLES_IN_STREAM}")
            signal = np.concatenate(list(blocks))
        try:
            return prepare_signal(signal, file_rate, sample_rate)
        except AudioError as error:
            raise AudioError(f"{self.path}: {error}") from None

    def blocks(self, block_s: float) -> tuple[int, Generator[np.ndarray, None, None]]:
        """The file's sample rate and its mono float32 blocks of about ``block_s`` seconds.

        The generator closes the file when exhausted or closed.
        """
        if self._file is None:
            return _ffmpeg_blocks(self.path, block_s, self._refusal)
        rate = self._file.samplerate
        # whole pieces of SALVAGE_FRAMES: a block that reads is never past what
        # :meth:`_readable_rest` finds in a file cut short
        pieces = max(1, math.ceil(block_s * rate / SALVAGE_FRAMES))
        return rate, self._mono_blocks(pieces * SALVAGE_FRAMES)

    def _whole_mono(self) -> np.ndarray:
        """libsndfile's whole read, mixed down (see :meth:`_after_failure` for a failed one)."""
        try:
            return _mono(self._file.read(dtype="float32", always_2d=True))
        except _SOUNDFILE_ERRORS as error:  # a header libsndfile reads, samples it cannot
            return np.concatenate(list(self._after_failure(0, None, error)))

    def _mono_blocks(self, size: int) -> Generator[np.ndarray, None, None]:
        """Blocks of ``size`` frames (an MPEG file without FFmpeg: read whole, then cut), none
        past the last frame actually read: a file shorter than its header says ends there."""
        try:
            if self._whole_only:
                whole = self._whole_mono()
                for start in range(0, whole.size, size):
                    yield whole[start : start + size]
                return
            position = 0
            while True:
                try:
                    block = self._file.read(size, dtype="float32", always_2d=True)
                except _SOUNDFILE_ERRORS as error:
                    yield from self._after_failure(position, size, error)
                    return
                if not len(block):
                    return
                position += len(block)
                yield _mono(block)
                if len(block) < size:
                    return
        finally:
            self.close()

    def _after_failure(
        self, position: int, size: int | None, error: BaseException
    ) -> Iterator[np.ndarray]:
        """The mono samples from frame ``position`` on, after libsndfile failed to read there,
        in blocks of about ``size`` frames (None: one block). The one rule for a whole read and
        a stream, so both give the same samples: FFmpeg's where it is installed (it decodes
        past a damaged stretch), else libsndfile's up to the damage.

        Raises:
            AudioError: when not one sample of the file can be read.
        """
        if HAS_FFMPEG:
            rest = self._ffmpeg_rest(position, size, error)
        else:
            readable = self._readable_rest(position)
            rest = iter(() if readable is None else (readable,))
        first = next(rest, None)
        if first is None and not position:
            raise AudioError(f"{self.path}: cannot decode audio ({_one_line(error)})")
        if first is not None:
            yield first
            yield from rest

    def _ffmpeg_rest(
        self, position: int, size: int | None, refusal: BaseException
    ) -> Iterator[np.ndarray]:
        """FFmpeg's mono samples from frame ``position`` on, in blocks of about ``size``."""
        rate = self._file.samplerate
        blocks_s = None if size is None else size / rate
        # at libsndfile's rate, which the stream has given already (FFmpeg decodes Opus at
        # 48 kHz whatever the header says)
        _, blocks = _ffmpeg_blocks(self.path, blocks_s, refusal, rate)
        skip = position
        for block in blocks:
            if skip >= block.size:
                skip -= block.size
                continue
            yield block[skip:]
            skip = 0

    def _readable_rest(self, position: int) -> np.ndarray | None:
        """The mono samples readable from frame ``position`` on (None: none). A FLAC cut short
        inside its audio fails the read that crosses the cut, and where libsndfile stops
        depends on how it was read; so the file is read again from its start, in pieces of
        :data:`SALVAGE_FRAMES`, up to the first that fails: the same last sample for a whole
        read and for a stream in blocks of any size (only the samples from ``position`` are
        kept, so memory stays at one block).
        """
        kept, read = [], 0
        try:  # a fresh open: after a failed read, libsndfile's decoder may fail sooner
            with sf.SoundFile(_descriptor(self.path)) as fresh:
                while len(piece := fresh.read(SALVAGE_FRAMES, dtype="float32", always_2d=True)):
                    if read + len(piece) > position:
                        kept.append(piece[max(0, position - read) :])
                    read += len(piece)
        except _SOUNDFILE_ERRORS:
            pass
        return _mono(np.concatenate(kept)) if kept else None

    def close(self) -> None:
        """Close the file (again is harmless)."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def prepare_signal(signal: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mix ``signal`` (``[samples]`` or ``[samples, channels]``) to mono float32 at ``sample_rate``.

    Raises:
        AudioError: when the signal is empty or holds NaN or infinite samples.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim == 2:
        signal = _mono(signal)
    elif signal.ndim != 1:
        raise AudioError(f"expected a 1-D or 2-D signal, got shape {signal.shape}")
    if signal.size == 0:
        raise AudioError("no audio samples (empty file)")
    problem = unusable_samples(signal)
    if problem:
        raise AudioError(problem)
    if rate <= 0:
        raise AudioError(f"invalid sample rate {rate}")
    if rate != sample_rate:
        signal = soxr.resample(signal, rate, sample_rate, quality="HQ").astype(np.float32)
        if signal.size == 0:
            raise AudioError("too short to resample (under one output sample)")
    return np.ascontiguousarray(signal, dtype=np.float32)


SALVAGE_FRAMES = 1024
"""Frames read at a time after a read failed inside the audio (a file cut short there)."""

MAX_ABS_SAMPLE = 1000.0
"""Float samples past this (60 dB over full scale) are corrupt, not loud: the models' arithmetic
overflows to NaN on them (Whisper's power spectrum in float32 past about 1e19)."""


def unusable_samples(samples: np.ndarray) -> str | None:
    """Why these samples cannot be scored, in a few words (None: they can)."""
    if not np.isfinite(samples).all():
        return "audio holds NaN or infinite samples"
    peak = float(np.abs(samples).max(initial=0.0))
    if peak > MAX_ABS_SAMPLE:
        return (
            f"audio holds samples far outside full scale (peak {peak:.3g}, "
            f"at most {MAX_ABS_SAMPLE:g})"
        )
    return None


def _seconds(value: float) -> str:
    """A duration as people read it: ``150 s``, ``2.5 h``."""
    return f"{value:.0f} s" if value < 3600 else f"{value / 3600:.1f} h"


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


def _ffmpeg_blocks(
    path: Path, block_s: float | None, refusal: BaseException | None, rate: int | None = None
) -> tuple[int, Iterator[np.ndarray]]:
    """Decode ``path`` with FFmpeg: its first audio stream's rate and mono blocks.

    Blocks hold at least ``block_s`` seconds (None: the whole file in one block). ``rate``: the
    samples resampled to it (None: the stream's first rate). A file with no audio samples
    gives rate 0 and no blocks.

    Raises:
        AudioError: see :class:`_FFmpegFile`, or a rate under :data:`MIN_SAMPLE_RATE`.
    """
    frames = _FFmpegFile(path, refusal).frames()
    first = next(frames, None)
    if first is None:
        return 0, iter(())
    if first[0] < MIN_SAMPLE_RATE:
        frames.close()
        raise AudioError(
            f"{path}: a sample rate of {first[0]} Hz (under {MIN_SAMPLE_RATE} Hz); refused"
        )
    rate = rate or first[0]
    size = None if block_s is None else max(1, int(block_s * rate))
    chunks = _at_rate(itertools.chain([first], frames), rate)
    return rate, _gather(chunks, size)


def _at_rate(frames: Iterator[tuple[int, np.ndarray]], rate: int) -> Iterator[np.ndarray]:
    """The frames at ``rate``: frames at another rate (a stream whose rate changes midway,
    recordings joined into one file; Opus, which FFmpeg decodes at 48 kHz where libsndfile's
    rate is wanted) are resampled to it, so that duration and pitch hold."""
    stream, current = None, rate
    for frame_rate, chunk in frames:
        if frame_rate != current:
            if stream is not None:
                yield stream.resample_chunk(np.zeros(0, np.float32), last=True)
            stream = None
            if frame_rate != rate:
                stream = soxr.ResampleStream(frame_rate, rate, 1, "float32", quality="HQ")
            current = frame_rate
        yield chunk if stream is None else stream.resample_chunk(chunk)
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


class _FFmpegFile:
    """A file libsndfile cannot read, opened by descriptor and demuxed by FFmpeg (PyAV).

    Raises:
        AudioError: when PyAV is missing (naming the install for FFmpeg's extensions), the file
            is not audio FFmpeg reads, or it has no audio stream.
    """

    def __init__(self, path: Path, refusal: BaseException | None) -> None:
        self.path, self._refusal = path, refusal
        try:
            import av
        except ImportError:
            if path.suffix.lower() in FFMPEG_EXTENSIONS:
                raise AudioError(
                    f"{path}: cannot decode {path.suffix} audio without FFmpeg: {FORMATS_INSTALL}"
                ) from None
            raise AudioError(f"{path}: cannot decode audio ({_one_line(refusal)})") from None
        self._errors = (av.FFmpegError, OSError, ValueError)
        self._to_float = av.AudioResampler(format="fltp")  # the sample format only
        try:
            self._handle = open(_descriptor(path), "rb")  # noqa: SIM115 (closed by close())
        except OSError as error:
            raise AudioError(f"{path}: cannot decode audio ({_one_line(error)})") from None
        try:
            self.container = av.open(self._handle)
        except self._errors as error:
            self._handle.close()
            raise AudioError(f"{path}: cannot decode audio ({self._reason(error)})") from None
        if not self.container.streams.audio:
            name = self.container.format.name
            self.close()
            raise AudioError(f"{path}: no audio stream (container {name})")
        self.stream = self.container.streams.audio[0]

    def duration(self) -> float:
        """The audio stream's duration, else the container's, else the samples counted."""
        stream, container = self.stream, self.container
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000  # FFmpeg's AV_TIME_BASE: microseconds
        samples, rate = 0, 0
        for frame_rate, mono in self.frames():
            samples, rate = samples + mono.size, frame_rate
        return samples / rate if rate else 0.0

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """Decoded frames as (rate, mono float32), mixed down as the soundfile path does.

        Closes the file when exhausted or closed.
        """
        decoded = False
        try:
            try:
                for frame in self.container.decode(self.stream):
                    decoded = True
                    for planar in self._to_float.resample(frame):
                        yield planar.sample_rate, planar.to_ndarray().mean(axis=0, dtype=np.float32)
            except self._errors as error:
                if not decoded:
                    raise AudioError(
                        f"{self.path}: cannot decode audio ({self._reason(error)})"
                    ) from None
                # a file cut short inside its audio: it ends where decoding stops
            for planar in self._to_float.resample(None):
                yield planar.sample_rate, planar.to_ndarray().mean(axis=0, dtype=np.float32)
        finally:
            self.close()

    def _reason(self, error: BaseException) -> str:
        """For a file libsndfile should read, its reason is the telling one."""
        own = self.path.suffix.lower() in SOUNDFILE_EXTENSIONS and self._refusal is not None
        return _one_line(self._refusal) if own else _ffmpeg_reason(error)

    def close(self) -> None:
        """Close the demuxer and the file (again is harmless)."""
        self.container.close()
        self._handle.close()

    def __enter__(self) -> _FFmpegFile:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _gather(chunks: Iterator[np.ndarray], size: int | None) -> Iterator[np.ndarray]:
    """Join small decoded frames into blocks of at least ``size`` samples (None: one block)."""
    parts, held = [], 0
    for chunk in chunks:
        parts.append(chunk)
        held += chunk.size
        if size is not None and held >= size:
            yield np.concatenate(parts)
            parts, held = [], 0
    if parts:
        yield np.concatenate(parts)


def _mono(block: np.ndarray) -> np.ndarray:
    """``[frames, channels]`` mixed down (one channel is taken as it is: a mean over it costs
    as much as decoding)."""
    return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


@functools.cache
def _ffmpeg_installed() -> bool:
    """Whether PyAV can be imported (looked up once, not for every file opened)."""
    return importlib.util.find_spec("av") is not None


def _one_line(error: BaseException | None) -> str:
    # libsndfile's own text, without soundfile's "Error opening <descriptor>: " prefix
    text = error.error_string if isinstance(error, sf.LibsndfileError) else str(error)
    return " ".join(text.split()) or type(error).__name__


def _ffmpeg_reason(error: BaseException) -> str:
    """FFmpeg's message without its errno and the file name the caller already names."""
    return getattr(error, "strerror", None) or _one_line(error)
