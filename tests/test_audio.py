import numpy as np
import pytest
import soundfile as sf

from ser.audio import (
    HAS_FFMPEG,
    SAMPLE_RATE,
    AudioFile,
    center_window,
    load_audio,
    prepare_signal,
    split_windows,
    stream_audio,
)
from ser.errors import AudioError

from synth import voiced


def _peak_hz(signal: np.ndarray, rate: int = SAMPLE_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / rate)[spectrum.argmax()])


def _sine(freq: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(
        "float32"
    )


@pytest.mark.parametrize(
    ("suffix", "fmt", "subtype"),
    [(".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".ogg", "OGG", "VORBIS"),
     (".mp3", "MP3", "MPEG_LAYER_III"), (".wav", "WAV", "FLOAT")],
)  # fmt: skip
@pytest.mark.parametrize("rate", [8_000, 16_000, 44_100, 48_000])
def test_every_format_and_rate_decodes_to_16k_mono(tmp_path, suffix, fmt, subtype, rate):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, _sine(440, 1.0, rate), rate, format=fmt, subtype=subtype)
    signal = load_audio(path)
    assert signal.dtype == np.float32 and signal.ndim == 1
    assert abs(signal.size - SAMPLE_RATE) < 0.06 * SAMPLE_RATE  # mp3 adds encoder padding
    assert abs(_peak_hz(signal) - 440) < 5


def test_stereo_is_mixed_down(tmp_path):
    left, right = _sine(300, 0.5, 48_000), _sine(300, 0.5, 48_000)
    sf.write(tmp_path / "s.wav", np.stack([left, -right], axis=1), 48_000)
    assert np.abs(load_audio(tmp_path / "s.wav")).max() < 1e-3  # opposite phases cancel
    sf.write(tmp_path / "s2.wav", np.stack([left, np.zeros_like(right)], axis=1), 48_000)
    assert np.abs(load_audio(tmp_path / "s2.wav")).max() == pytest.approx(0.25, abs=0.01)


def test_many_channels_at_96k(tmp_path):
    sf.write(tmp_path / "m.wav", np.tile(_sine(500, 0.25, 96_000)[:, None], (1, 8)), 96_000)
    signal = load_audio(tmp_path / "m.wav")
    assert signal.size == 4000 and abs(_peak_hz(signal) - 500) < 10


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "cannot decode"), (b"RIFF\x10\x00\x00\x00WAVEfmt ", "cannot decode"),
     (np.random.default_rng(0).bytes(4096), "cannot decode")],
)  # fmt: skip
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "broken file.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as error:
        load_audio(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_missing_file_and_nan_samples(tmp_path):
    with pytest.raises(AudioError, match=r"missing\.wav: cannot decode"):
        load_audio(tmp_path / "missing.wav")
    bad = _sine(200, 0.1, 16_000)
    bad[10], bad[20] = np.nan, np.inf
    sf.write(tmp_path / "nan.wav", bad, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(tmp_path / "nan.wav")


@pytest.mark.parametrize("ffmpeg", [True, False])
@pytest.mark.parametrize("damage", ["cut at 27%", "cut at 50%", "2 kB zeroed at 30%"])
def test_a_flac_broken_inside_its_audio_reads_the_same_whole_and_streamed(
    tmp_path, monkeypatch, damage, ffmpeg
):
    """libsndfile fails the read that crosses the damage, at a point that depends on the read.
    With FFmpeg installed the rest is FFmpeg's (it decodes past damage, up to a cut); without,
    the file is read again up to the damage. Either way a whole read and a stream in blocks
    of any size give the same samples."""
    if ffmpeg and not HAS_FFMPEG:
        pytest.skip("FFmpeg (PyAV, the formats extra) is not installed")
    monkeypatch.setattr("ser.audio.HAS_FFMPEG", ffmpeg)
    signal = np.random.default_rng(1).standard_normal(150 * 16_000).astype(np.float32) * 0.1
    sf.write(tmp_path / "whole.flac", signal, 16_000)
    data = bytearray((tmp_path / "whole.flac").read_bytes())
    if damage.startswith("cut"):
        keep = int(damage.split()[-1][:-1]) / 100
        data, kept_s = data[: int(len(data) * keep)], keep * 150
    else:
        at = int(len(data) * 0.3)
        data[at : at + 2000] = bytes(2000)
        kept_s = 150 if ffmpeg else 0.3 * 150  # FFmpeg skips the damaged frames
    (tmp_path / "broken.flac").write_bytes(bytes(data))
    whole = load_audio(tmp_path / "broken.flac")
    assert 0.8 * kept_s < whole.size / 16_000 < 1.1 * kept_s
    np.testing.assert_allclose(whole[:16_000], signal[:16_000], atol=1e-4)  # 16-bit FLAC
    for block_s in (0.01, 0.5, 1.0, 3.0, 1000.0):
        rate, blocks = AudioFile(tmp_path / "broken.flac").blocks(block_s)
        assert rate == 16_000
        np.testing.assert_array_equal(np.concatenate(list(blocks)), whole)


def test_ffmpeg_takes_over_at_the_rate_libsndfile_gave(tmp_path, monkeypatch):
    """FFmpeg decodes Opus at 48 kHz whatever its header says; where libsndfile fails to read a
    16 kHz Opus file, FFmpeg's samples are resampled to the 16 kHz the stream already gave,
    and a whole read gives the same samples (it once refused the file: "FFmpeg reads 48000 Hz
    where libsndfile read 16000 Hz")."""
    if not HAS_FFMPEG:
        pytest.skip("FFmpeg (PyAV, the formats extra) is not installed")
    signal = _sine(300, 6.0, 16_000) * 0.3
    sf.write(tmp_path / "voice.ogg", signal, 16_000, format="OGG", subtype="OPUS")
    read = sf.SoundFile.read

    def fails_past_a_second(self, frames=-1, *args, **kwargs):
        if frames == -1 or self.tell() >= 16_000:
            raise sf.LibsndfileError(0, prefix="made to fail: ")
        return read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", fails_past_a_second)
    whole = load_audio(tmp_path / "voice.ogg")
    assert abs(whole.size - signal.size) < 0.01 * signal.size  # 6 s, not 2 s or 18 s
    for block_s in (0.05, 0.5):  # libsndfile's first second, then FFmpeg's rest
        streamed = np.concatenate(list(stream_audio(tmp_path / "voice.ogg", block_s=block_s)))
        assert abs(streamed.size - signal.size) < 0.01 * signal.size
    level = np.sqrt(np.mean(whole[16_000:-16_000] ** 2))
    assert 0.8 * 0.15 / np.sqrt(2) < level < 1.2 * 0.15 / np.sqrt(2)  # the tone, not silence


def test_samples_far_past_full_scale_are_refused_not_scored_as_nan(tmp_path):
    """Finite but absurd float samples (1e30) once gave an ok row of NaN probabilities."""
    loud = _sine(200, 0.5, 16_000)
    sf.write(tmp_path / "over.wav", 4 * loud, 16_000, subtype="FLOAT")  # loud, still audio
    assert np.abs(load_audio(tmp_path / "over.wav")).max() > 1
    sf.write(tmp_path / "huge.wav", 1e30 * loud, 16_000, subtype="FLOAT")
    with pytest.raises(AudioError, match="far outside full scale"):
        load_audio(tmp_path / "huge.wav")
    with pytest.raises(AudioError, match="far outside full scale"):
        prepare_signal(1e30 * loud, 16_000)


def test_prepare_signal_rejects_empty_and_bad_shapes():
    with pytest.raises(AudioError, match="empty"):
        prepare_signal(np.zeros(0), 16_000)
    with pytest.raises(AudioError, match="1-D or 2-D"):
        prepare_signal(np.zeros((2, 2, 2)), 16_000)


def test_center_window_crops_and_pads():
    signal = np.arange(10, dtype=np.float32)
    assert center_window(signal, 4).tolist() == [3, 4, 5, 6]
    assert center_window(signal[:2], 4).tolist() == [0, 0, 1, 0]


def test_split_windows_covers_every_sample():
    signal = voiced(150, 2.5)  # 40,000 samples
    windows, starts = split_windows(signal, 16_000, 10_000)
    assert starts.tolist() == [0, 10_000, 20_000, 30_000]
    assert windows.shape == (4, 16_000)
    np.testing.assert_array_equal(windows[-1, :10_000], signal[30_000:])
    assert not windows[-1, 10_000:].any()
    short, starts = split_windows(signal[:100], 16_000, 16_000)
    assert short.shape == (1, 16_000) and starts.tolist() == [0]
    with pytest.raises(ValueError, match="positive"):
        split_windows(signal, 0, 1)
