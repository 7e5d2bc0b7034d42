"""Audio people actually have: phone, browser and video recordings decoded through FFmpeg.

Every file here is written by the test itself with PyAV (the ``formats`` extra, part of the
``test`` extra); without PyAV the decoding tests skip and the missing-extra tests still run.
"""

import csv
import sys
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from ser.audio import (
    AUDIO_EXTENSIONS,
    COMMON_FFMPEG_EXTENSIONS,
    FORMATS_INSTALL,
    SAMPLE_RATE,
    audio_duration,
    load_audio,
    stream_audio,
)
from ser.batch.cli import main as batch_main
from ser.errors import AudioError

from synth import class_signal, write_ffmpeg

av = pytest.importorskip("av", reason="PyAV (pip install 'ser-toolkit[formats]') is not installed")

# suffix, codec, container, codec rate, bit rate
FORMATS = [
    (".m4a", "aac", None, None, None),
    (".mp4", "aac", None, None, None),
    (".aac", "aac", "adts", None, None),
    (".webm", "libopus", None, 48_000, None),
    (".amr", "libopencore_amrnb", None, 8_000, None),
    (".wma", "wmav2", "asf", None, 64_000),
]


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / SAMPLE_RATE)[spectrum.argmax()])


def _write(path, signal, rate, suffix):
    _, codec, container, codec_rate, bit_rate = next(f for f in FORMATS if f[0] == suffix)
    return write_ffmpeg(path, signal, rate, codec, container=container, codec_rate=codec_rate,
                        bit_rate=bit_rate)  # fmt: skip


@pytest.mark.parametrize("suffix", [f[0] for f in FORMATS])
def test_ffmpeg_formats_decode_like_soundfile_ones(tmp_path, suffix):
    path = _write(tmp_path / f"tone{suffix}", _tone(440, 1.0, 22_050), 22_050, suffix)
    signal = load_audio(path)
    assert signal.dtype == np.float32 and signal.ndim == 1
    # codecs add priming and padding samples; raw ADTS AAC has no edit list to trim them
    assert abs(signal.size - SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    assert abs(_peak_hz(signal) - 440) < 5
    assert audio_duration(path) == pytest.approx(1.0, abs=0.1)
    streamed = np.concatenate(list(stream_audio(path, block_s=0.25)))
    assert abs(streamed.size - signal.size) <= 2
    n = min(streamed.size, signal.size)
    np.testing.assert_allclose(streamed[:n], signal[:n], atol=2e-3)


def test_stereo_is_mixed_down_and_discovery_takes_ffmpeg_extensions(tmp_path):
    left = _tone(300, 0.5, 48_000)
    path = _write(tmp_path / "stereo.m4a", np.stack([left, np.zeros_like(left)]), 48_000, ".m4a")
    assert np.abs(load_audio(path)).max() == pytest.approx(0.15, abs=0.02)
    assert {".m4a", ".mp4", ".aac", ".webm", ".amr", ".wma"} <= AUDIO_EXTENSIONS


def test_a_long_file_streams_in_flat_memory(tmp_path):
    """Four minutes of AAC: streaming holds about one block, never the whole signal."""
    path = _write(tmp_path / "long.m4a", class_signal(3, 240.0, seed=1), 16_000, ".m4a")
    whole_bytes = 240 * SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        samples, blocks = 0, 0
        for block in stream_audio(path, block_s=5.0):
            samples, blocks = samples + block.size, blocks + 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blocks >= 40 and abs(samples / SAMPLE_RATE - 240) < 0.2
    assert peak < whole_bytes / 5, f"streaming peaked at {peak / 1e6:.1f} MB"


def test_a_video_without_sound_and_a_non_audio_file_are_one_line_errors(tmp_path):
    video = tmp_path / "silent-film.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    (tmp_path / "notes.m4a").write_text("not audio at all\n")
    for path, message in [(video, "no audio stream"), (tmp_path / "notes.m4a", "cannot decode")]:
        with pytest.raises(AudioError, match=message) as error:
            load_audio(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_phone_and_browser_recordings_score_through_ser_batch(tmp_path, forest_onnx):
    """m4a, mp4, aac, webm: decoded and scored like their WAV originals (the forest model)."""
    folder = tmp_path / "calls"
    folder.mkdir()
    originals = {0: class_signal(0, 1.5, seed=501), 7: class_signal(7, 1.5, seed=502)}
    for index, signal in originals.items():
        for suffix in (".m4a", ".mp4", ".aac", ".webm"):
            _write(folder / f"class{index}{suffix}", signal, 16_000, suffix)
    report = tmp_path / "r.csv"
    args = ["score", str(folder), "-o", str(report), "--model", str(forest_onnx)]
    result = CliRunner().invoke(batch_main, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 8 and all(row["status"] == "ok" for row in rows)
    for row in rows:
        expected = "neutral" if "class0" in row["path"] else "surprised"
        assert row["label"] == expected, row
        assert float(row["duration_s"]) == pytest.approx(1.5, abs=0.15)  # raw AAC pads


def test_a_long_m4a_is_scored_block_by_block(tmp_path, monkeypatch):
    """Over a minute: the windowed default model streams it instead of decoding it whole."""
    path = _write(tmp_path / "meeting.m4a", class_signal(2, 75.0, seed=3), 16_000, ".m4a")

    def whole_file(*_args, **_kwargs):
        raise AssertionError("a long file was decoded whole")

    monkeypatch.setattr("ser.audio.AudioFile.read", whole_file)
    segments = tmp_path / "seg.csv"
    args = ["score", str(path), "-o", str(tmp_path / "r.csv"), "--segments", str(segments)]
    result = CliRunner().invoke(batch_main, args)
    assert result.exit_code == 0, result.output
    (row,) = csv.DictReader((tmp_path / "r.csv").open())
    assert row["status"] == "ok" and float(row["duration_s"]) == pytest.approx(75, abs=0.2)
    assert len(list(csv.DictReader(segments.open()))) == 19  # 4 s windows over 75 s


def test_without_pyav_ffmpeg_files_get_a_row_naming_the_install(tmp_path, monkeypatch, forest_onnx):
    path = _write(tmp_path / "voice.m4a", class_signal(4, 1.0, seed=9), 16_000, ".m4a")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now fails, as when not installed
    assert COMMON_FFMPEG_EXTENSIONS <= AUDIO_EXTENSIONS  # still discovered: never skipped silently
    with pytest.raises(AudioError, match="without FFmpeg") as error:
        load_audio(path)
    assert FORMATS_INSTALL in str(error.value)
    report = tmp_path / "r.csv"
    args = ["score", str(tmp_path), "-o", str(report), "--model", str(forest_onnx)]
    result = CliRunner().invoke(batch_main, args)
    assert result.exit_code == 3, result.output
    (row,) = csv.DictReader(report.open())
    assert row["status"] == "error" and FORMATS_INSTALL in row["error"]


@pytest.mark.parametrize("with_ffmpeg", [True, False])
def test_a_long_mp3_streams_exactly_as_it_decodes_whole(tmp_path, monkeypatch, with_ffmpeg):
    """libsndfile's MPEG decoder gives other samples when read in blocks: MP3s go to FFmpeg,
    or without it are read whole by libsndfile and cut."""
    import soundfile as sf

    import ser.audio as audio

    path = tmp_path / "long.mp3"
    sf.write(path, _tone(440, 70.0, 44_100) * 0.5, 44_100, format="MP3")
    if not with_ffmpeg:
        monkeypatch.setattr(audio, "_ffmpeg_installed", lambda: False)
    whole = load_audio(path)
    streamed = np.concatenate(list(stream_audio(path)))
    assert streamed.size == whole.size and np.array_equal(streamed, whole)
    assert abs(whole.size / SAMPLE_RATE - 70.0) < 0.1


def test_joined_mp3s_and_a_rate_change_midway_keep_their_whole_duration(tmp_path):
    parts = []
    for index, rate in enumerate((44_100, 22_050)):  # an ADTS stream whose rate changes midway
        part = write_ffmpeg(tmp_path / f"p{index}.aac", _tone(440, 2.0, rate), rate, "aac",
                            container="adts")  # fmt: skip
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.aac"
    joined.write_bytes(b"".join(parts))
    signal = load_audio(joined)
    assert abs(signal.size / SAMPLE_RATE - 4.0) < 0.2  # not 3.1 s: the second part at its rate
    assert abs(_peak_hz(signal[-SAMPLE_RATE:]) - 440) < 10  # and at its pitch
    import soundfile as sf

    for index in range(2):
        sf.write(tmp_path / f"m{index}.mp3", _tone(440, 2.0, 44_100) * 0.5, 44_100, format="MP3")
    mp3 = tmp_path / "joined.mp3"
    mp3.write_bytes((tmp_path / "m0.mp3").read_bytes() + (tmp_path / "m1.mp3").read_bytes())
    assert load_audio(mp3).size / SAMPLE_RATE > 3.9  # libsndfile alone stops after the first


def test_a_stream_without_samples_says_so(tmp_path):
    path = tmp_path / "muted.mkv"  # a video whose audio track never got a packet
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("mpeg4", rate=10)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        out.add_stream("aac", rate=16_000, layout="mono")
        for index in range(10):
            picture = np.full((64, 64, 3), index * 8, np.uint8)
            out.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(video.encode(None))
    with pytest.raises(AudioError, match="audio stream holds no samples"):
        load_audio(path)
    with pytest.raises(AudioError, match="audio stream holds no samples"):
        list(stream_audio(path))
