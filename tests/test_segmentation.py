"""``--segmentation vad``: speech regions found at the right times, utterance rows, no-speech rows,
flat memory on long files, and reports that do not depend on batching or block sizes."""

from __future__ import annotations

import csv
import tracemalloc
from itertools import pairwise

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.audio import center_window
from ser.batch.cli import main as batch_main
from ser.batch.frontends import WaveformFrontend, frontend_for
from ser.batch.run import RunOptions
from ser.batch.segmentation import Region, Segmentation, SpeechTracker, join_sentences
from ser.batch.utterances import SpeechFrontend
from ser.metadata import ModelMetadata
from ser.vad import FRAME, SileroVad

from synth import bursts

RATE = 16_000
SPANS = [(1.0, 3.0), (5.0, 6.5), (9.0, 11.5)]


def _frames(pattern: list[tuple[float, float]], seconds: float) -> np.ndarray:
    """Frame probabilities: 0.9 inside the ``(start, end)`` spans (seconds), 0.05 outside."""
    probs = np.full(int(seconds * RATE) // FRAME, 0.05)
    for start, end in pattern:
        probs[int(start * RATE) // FRAME : int(end * RATE) // FRAME] = 0.9
    return probs


def _track(probs: np.ndarray, settings: Segmentation, chunk: int = 10_000) -> list[Region]:
    tracker, regions = SpeechTracker(settings), []
    for first in range(0, len(probs), chunk):
        regions += tracker.feed(probs[first : first + chunk])
    return regions + tracker.finish(len(probs) * FRAME)


def _seconds(regions: list[Region]) -> list[tuple[float, float]]:
    return [(r.start / RATE, r.end / RATE) for r in regions]


def test_the_tracker_merges_short_pauses_drops_short_blips_and_pads():
    settings = Segmentation(min_silence_s=0.3, min_speech_s=0.25, pad_s=0.03)
    # a 0.2 s pause inside the first utterance, a 0.1 s blip, then a second utterance
    probs = _frames([(1.0, 2.0), (2.2, 3.0), (4.0, 4.1), (5.0, 6.0)], 8.0)
    found = _seconds(_track(probs, settings))
    assert len(found) == 2
    for (start, end), (true_start, true_end) in zip(found, [(1.0, 3.0), (5.0, 6.0)], strict=True):
        assert abs(start - (true_start - 0.03)) <= FRAME / RATE
        assert abs(end - (true_end + 0.03)) <= FRAME / RATE
    # the same pause counts as silence once min_silence is below it
    assert len(_track(probs, Segmentation(min_silence_s=0.1, pad_s=0.03))) == 3


def test_an_over_long_region_is_split_at_its_longest_pause():
    probs = _frames([(0.5, 6.0), (6.2, 12.0), (12.15, 25.0)], 26.0)  # pauses 0.2 s and 0.15 s
    found = _seconds(_track(probs, Segmentation(max_speech_s=15.0, min_silence_s=0.5)))
    assert len(found) == 3  # first at the longer pause, then the rest at the one left
    assert found[0][1] == pytest.approx(6.0 + 0.03, abs=0.04)
    assert found[1][0] == pytest.approx(6.2 - 0.03, abs=0.04)
    assert found[1][1] == pytest.approx(12.0 + 0.03, abs=0.04)
    assert all(end - start <= 15.0 for start, end in found)
    assert found[2][1] == pytest.approx(25.0 + 0.03, abs=0.04)


def test_a_region_under_the_maximum_is_not_split_while_its_closing_pause_is_counted():
    """The maximum was once checked during the silence that closes a region: a 19.6 s region
    was cut at an inner pause and its second part ran 0.3 s into the silence."""
    probs = _frames([(2.0, 11.0), (11.26, 21.6)], 28.0)  # 19.6 s; limit 20 - frame - 2 pads
    found = _seconds(_track(probs, Segmentation()))
    assert len(found) == 1
    assert found[0] == pytest.approx((2.0 - 0.03, 21.6 + 0.03), abs=0.04)
    # an inner pause longer than the closing one (its end neither speech nor silence, 0.4)
    probs[int(11.1 * RATE) // FRAME : int(11.26 * RATE) // FRAME] = 0.4
    probs[int(11.26 * RATE) // FRAME : int(11.6 * RATE) // FRAME] = 0.4
    assert len(_track(probs, Segmentation())) == 1


def test_a_pause_longer_than_min_silence_ends_a_region_even_when_the_maximum_falls_inside_it():
    """The maximum reached during a pause that then closes the region within it: one region,
    not a cut at the earlier pause with the pause going on counted again from zero."""
    probs = _frames([(2.0, 11.0), (11.26, 13.25), (13.64, 15.5)], 18.0)  # pauses 0.26, 0.39 s
    found = _seconds(_track(probs, Segmentation(max_speech_s=11.5)))
    assert [round(end - start, 1) for start, end in found] == [11.3, 1.9]
    assert found[0][1] == pytest.approx(13.25 + 0.03, abs=0.04)
    # a late short pause, then a little more speech within the maximum: still one region
    late = _frames([(2.0, 21.5), (21.75, 21.8)], 24.0)
    assert len(_track(late, Segmentation())) == 1


def test_a_split_leaves_no_piece_shorter_than_min_speech():
    probs = _frames([(1.0, 1.1), (1.3, 4.0)], 6.0)  # the only long pause right after 0.1 s
    found = _seconds(_track(probs, Segmentation(max_speech_s=1.0, min_silence_s=0.3)))
    assert all(end - start > 0.25 for start, end in found), found


@pytest.mark.parametrize("seed", range(6))
def test_regions_never_pass_the_maximum_nor_overlap_whatever_the_probabilities(seed):
    rng = np.random.default_rng(seed)
    for probs in (rng.uniform(0, 1, 4000) ** 3, np.repeat(rng.uniform(0, 1, 400) ** 0.5, 10)):
        for settings in (Segmentation(max_speech_s=1.0, pad_s=0.0, min_silence_s=0.1),
                         Segmentation(max_speech_s=3.0, min_speech_s=0.6)):  # fmt: skip
            found = _track(probs, settings)
            assert found == _track(probs, settings, 7)
            assert all(r.end - r.start <= settings.max_speech_s * RATE for r in found)
            assert all(a.end <= b.start for a, b in pairwise(found))


@pytest.mark.parametrize("chunk", [1, 7, 512, 100_000])
def test_regions_do_not_depend_on_how_the_frames_arrive(chunk):
    probs = np.random.default_rng(0).uniform(0, 1, 3000) ** 3  # 96 s of flickering probability
    assert _track(probs, Segmentation(), chunk) == _track(probs, Segmentation(), 10**9)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(mode="energy"), "expected one of vad, windows"),
        (dict(threshold=1.5), "between 0 and 1"),
        (dict(min_silence_s=0.05, pad_s=0.03), "at least twice the padding"),
        (dict(max_speech_s=0.5), "at least 1 s"),
        (dict(max_speech_s=1.0, pad_s=0.49, min_silence_s=1.0, min_speech_s=0), "32 ms frame"),
        (dict(context_s=float("nan")), "finite"),  # nan passes every range check
        (dict(min_speech_s=float("nan")), "finite"),
        (dict(max_speech_s=float("inf")), "finite"),
        (dict(refresh_s=0.5), "0 \\(never\\) or at least 1 s"),
        (dict(refresh_s=float("nan")), "finite"),
        (dict(sentence_pause_s=-0.5), "must not be negative"),
        (dict(sentence_pause_s=float("nan")), "finite"),
        (dict(sentence_part_s=-1.0), "must not be negative"),
    ],
)
def test_impossible_settings_are_refused_saying_what_is_allowed(settings, message):
    with pytest.raises(ValueError, match=message):
        Segmentation(**settings)


def test_silero_finds_speech_like_bursts_at_the_right_times():
    vad = SileroVad()
    for seed in (0, 6):
        signal = bursts(SPANS, 13.0, seed=seed)
        found = _seconds(_track(vad.probabilities(signal), Segmentation()))
        assert len(found) == len(SPANS), (seed, found)
        for (start, end), (true_start, true_end) in zip(found, SPANS, strict=True):
            assert abs(start - true_start) < 0.1 and -0.05 < end - true_end < 0.3, (seed, found)


def test_the_vad_state_is_carried_across_blocks_bit_for_bit():
    signal = bursts(SPANS, 13.0, seed=0)
    whole = SileroVad().probabilities(signal)
    stream = SileroVad().stream()
    pieces = [stream.feed(signal[start : start + 7_001]) for start in range(0, signal.size, 7_001)]
    assert np.array_equal(np.concatenate([*pieces, stream.finish()]), whole)


def _metadata(window_s: float = 4.0, pool: str | None = None) -> ModelMetadata:
    """A waveform model's metadata; ``pool`` as its heads pool (``speech``: over speech only)."""
    return ModelMetadata(
        "waveform", ("a", "b"), RATE, "audio", "probs", window_s=window_s, hop_s=window_s,
        extra={"pool": pool} if pool else {},
    )  # fmt: skip


def _frontend(window_s: float = 4.0, pool: str | None = None, **settings: float) -> SpeechFrontend:
    """The frontend ``ser-batch`` builds for such a model with ``--segmentation vad``."""
    frontend = frontend_for(_metadata(window_s, pool), segmentation=Segmentation("vad", **settings))
    assert isinstance(frontend, SpeechFrontend)
    return frontend


def _plain_from(signal: np.ndarray, first: int, last: int) -> np.ndarray:
    """Frames ``first`` to ``last`` of a plain stream started afresh at ``first`` (its context,
    the 64 samples before that frame, as a running stream would have it)."""
    stream = SileroVad().stream()
    if first:
        stream._context = signal[first * FRAME - 64 : first * FRAME].copy()
    return stream.feed(signal[first * FRAME : last * FRAME])


@pytest.mark.parametrize("period", [100, 37])
def test_a_refreshed_stream_is_the_higher_of_two_lanes_restarted_half_a_period_apart(period):
    signal = bursts(SPANS, 13.0, seed=2)
    frames = signal.size // FRAME
    got = SileroVad().probabilities(signal, period)
    want = np.zeros(frames, np.float32)
    for offset in (0, period // 2):  # the second lane runs from its first restart on
        starts = (
            list(range(offset, frames, period)) if offset else [0, *range(period, frames, period)]
        )
        for first, last in zip(starts, [*starts[1:], frames], strict=True):
            lane = _plain_from(signal, first, last)
            want[first:last] = np.maximum(want[first:last], lane)
    assert np.array_equal(got[:frames], want)
    plain = SileroVad().probabilities(signal)
    assert not np.array_equal(got, plain)  # the restarts change something on this signal
    assert (got[: period // 2] == plain[: period // 2]).all()  # before any restart: one state


@pytest.mark.parametrize("block", [511, 7_001, 16_000 * 5])
def test_a_refreshed_stream_does_not_depend_on_block_sizes(block):
    signal = bursts(SPANS, 13.0, seed=1)
    whole = SileroVad().probabilities(signal, 37)
    stream = SileroVad().stream(37)
    pieces = [stream.feed(signal[start : start + block]) for start in range(0, signal.size, block)]
    assert np.array_equal(np.concatenate([*pieces, stream.finish()]), whole)


def test_the_vad_refresh_reaches_the_scoring_stream(monkeypatch):
    asked: list[int] = []
    plain = SileroVad.stream

    def spy(self, refresh_frames=0):
        asked.append(refresh_frames)
        return plain(self, refresh_frames)

    monkeypatch.setattr(SileroVad, "stream", spy)
    _frontend(refresh_s=2.0).inputs(bursts(SPANS, 13.0, seed=0))
    assert asked == [round(2.0 * RATE / FRAME)] == [62]


def test_streamed_regions_give_the_same_rows_as_the_whole_signal():
    signal = np.concatenate([bursts(SPANS, 13.0, seed=0), bursts([(0.5, 10.0)], 12.0, seed=6)])
    frontend = _frontend(window_s=2.0)
    whole = frontend.inputs(signal)
    assert len(whole.regions) == 4 and whole.samples == signal.size
    for block in (3_000, 16_000 * 5):
        chunks = list(
            frontend.stream_inputs(signal[s : s + block] for s in range(0, signal.size, block))
        )
        assert len(chunks) > 1
        for name in ("rows", "starts", "ends", "regions"):
            streamed = np.concatenate([getattr(chunk, name) for chunk in chunks])
            assert np.array_equal(streamed, getattr(whole, name)), (block, name)
    # a 9.5 s region is scored over windows of its own; a short one is one window with context
    owner = whole.region_of_row
    assert (owner == 3).sum() == 5 and (owner == 0).sum() == 1
    assert whole.ends[owner == 3].max() == whole.regions[3, 1]


@pytest.mark.parametrize("pause", [0.0, 1.0])
def test_regions_given_get_the_rows_of_the_same_regions_found(pause):
    """``region_inputs`` (benchmarks score true utterance spans with it) is the VAD path's
    own: fed the regions the VAD found, it gives exactly the rows of :meth:`inputs`."""
    talk = bursts([(1.0, 1.8), (2.4, 3.0), (6.0, 7.5)], 9.0, seed=0)
    signal = np.concatenate([talk, bursts([(0.5, 10.0)], 12.0, seed=6)])
    frontend = _frontend(sentence_pause_s=pause)
    found = frontend.inputs(signal)
    assert len(found.regions) == 4 and (found.region_of_row == 3).sum() > 1
    given = frontend.region_inputs(signal, [Region(*span) for span in found.regions.tolist()])
    for name in ("rows", "starts", "ends", "regions", "region_of_row", "samples"):
        assert np.array_equal(getattr(given, name), getattr(found, name)), name
    if pause:  # the 1 s pause joins two regions into one sentence: one row, repeated
        assert np.array_equal(found.rows[0], found.rows[1])
    moved = frontend.region_inputs(signal, [Region(RATE, 2 * RATE)])  # any span, its context
    assert np.array_equal(moved.rows[0], center_window(signal[: 3 * RATE], 4 * RATE))


def test_a_two_hour_stream_keeps_flat_memory(monkeypatch):
    """Two hours of blocks (a burst of speech a minute, silence between): memory stays at a few
    blocks. The VAD is replaced by a loudness rule here, so the test runs in seconds: what is
    measured is the frontend's buffering, not Silero."""

    class LoudnessStream:
        def __init__(self) -> None:
            self.pending = np.zeros(0, np.float32)

        def feed(self, block: np.ndarray) -> np.ndarray:
            samples = np.concatenate([self.pending, block])
            whole = samples.size // FRAME * FRAME
            self.pending = samples[whole:]
            frames = samples[:whole].reshape(-1, FRAME)
            return (np.abs(frames).mean(axis=1) > 0.01).astype(np.float64)

        def finish(self) -> np.ndarray:
            return np.zeros(0)

    monkeypatch.setattr(SileroVad, "stream", lambda self, refresh_frames=0: LoudnessStream())
    frontend = _frontend()
    minute = np.zeros(60 * RATE, np.float32)
    minute[RATE : 4 * RATE] = 0.1  # a 3 s "utterance" each minute

    def blocks():
        for _ in range(120):
            yield minute[: 30 * RATE].copy()
            yield minute[30 * RATE :].copy()

    tracemalloc.start()
    try:
        regions = rows = 0
        for chunk in frontend.stream_inputs(blocks()):
            regions += len(chunk.regions)
            rows += len(chunk.rows)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert regions == rows == 120
    assert peak < 20e6, f"peaked at {peak / 1e6:.1f} MB; two hours are {7200 * RATE * 4 / 1e6} MB"


def _score(paths, out, *extra) -> list[dict[str, str]]:
    result = CliRunner().invoke(
        batch_main,
        ["score", *map(str, paths), "-o", str(out), "--segmentation", "vad", *map(str, extra)],
    )
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(out.open()))


def test_silence_gets_the_no_speech_row_and_speech_gets_utterance_rows(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rng = np.random.default_rng(1)
    sf.write(audio / "quiet.wav", (0.002 * rng.standard_normal(5 * RATE)).astype(np.float32), RATE)
    sf.write(audio / "zeros.wav", np.zeros(3 * RATE, np.float32), RATE)
    sf.write(audio / "talk.wav", bursts(SPANS, 13.0, seed=0), RATE)
    rows = _score([audio], tmp_path / "r.csv", "--segments", tmp_path / "s.csv")
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    for name in ("quiet.wav", "zeros.wav"):
        row = by_name[name]
        assert row["status"] == "no_speech" and row["speech_s"] == "0.000", row
        assert row["label"] == row["confidence"] == row["p_angry"] == row["error"] == ""
    talk = by_name["talk.wav"]
    assert talk["status"] == "ok" and talk["label"]
    assert 5.5 < float(talk["speech_s"]) < 7.0  # 6 s of bursts, padded
    utterances = [row for row in csv.DictReader((tmp_path / "s.csv").open())]
    assert [row["path"].rsplit("/", 1)[-1] for row in utterances] == ["talk.wav"] * 3
    spans = [(float(row["start_s"]), float(row["end_s"])) for row in utterances]
    for (start, end), (true_start, true_end) in zip(spans, SPANS, strict=True):
        assert abs(start - true_start) < 0.1 and abs(end - true_end) < 0.3
    # the file's probabilities are its utterances', weighted by their length
    lengths = np.array([end - start for start, end in spans])
    probs = np.array([[float(row[f"p_{k}"]) for k in ("neutral", "angry")] for row in utterances])
    expected = (probs * lengths[:, None]).sum(0) / lengths.sum()
    assert np.allclose(expected, [float(talk["p_neutral"]), float(talk["p_angry"])], atol=2e-3)
    # windows mode labels the same silence: what vad exists to avoid
    windows = _score([audio / "zeros.wav"], tmp_path / "w.csv", "--segmentation", "windows")
    assert windows[0]["status"] == "ok" and windows[0]["speech_s"] == ""


def test_vad_reports_are_identical_for_any_batch_size_worker_and_session_count(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for n in range(4):
        spans = [(0.5, 2.0 + n), (4.0 + n, 5.5 + n)]
        sf.write(audio / f"f{n}.wav", bursts(spans, 7.0 + n, seed=3 * n), RATE)
    sf.write(audio / "silent.wav", np.zeros(2 * RATE, np.float32), RATE)
    runs = {}
    for batch, workers, sessions in ((1, 1, 1), (3, 2, 2), (64, 2, 1)):
        out = tmp_path / f"r{batch}.csv"
        rows = _score(
            [audio], out, "--batch-size", batch, "--workers", workers, "--sessions", sessions,
            "--segments", tmp_path / f"s{batch}.csv",
        )  # fmt: skip
        runs[batch] = (rows, (tmp_path / f"s{batch}.csv").read_text())
    assert runs[1][0] == runs[3][0] == runs[64][0]
    assert runs[1][1] == runs[3][1] == runs[64][1]
    assert {row["status"] for row in runs[1][0]} == {"ok", "no_speech"}


def test_incremental_keeps_no_speech_rows_and_rescores_when_segmentation_changes(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "zeros.wav", np.zeros(2 * RATE, np.float32), RATE)
    sf.write(audio / "talk.wav", bursts(SPANS[:1], 4.0, seed=0), RATE)
    out, segments = tmp_path / "r.csv", tmp_path / "s.csv"
    first = _score([audio], out, "--incremental", "--segments", segments)
    result = CliRunner().invoke(
        batch_main,
        ["score", str(audio), "-o", str(out), "--incremental", "--segments", str(segments),
         "--segmentation", "vad"],
    )  # fmt: skip
    assert "2 unchanged files kept" in result.output
    assert list(csv.DictReader(out.open())) == first
    result = CliRunner().invoke(
        batch_main,
        ["score", str(audio), "-o", str(out), "--incremental", "--segmentation", "vad",
         "--vad-context", "0.5"],
    )  # fmt: skip
    assert "0 unchanged files kept" in result.output  # the context is part of the key
    settings = {row["settings"].split("context=")[-1] for row in csv.DictReader(out.open())}
    assert settings == {"0.5"}  # the test model pools over every frame: no sentences
    result = CliRunner().invoke(
        batch_main,
        ["score", str(audio), "-o", str(out), "--incremental", "--segmentation", "vad",
         "--vad-context", "0.5", "--vad-refresh", "2"],
    )  # fmt: skip
    assert "0 unchanged files kept" in result.output  # so is the VAD's refresh
    settings = {row["settings"].split("context=")[-1] for row in csv.DictReader(out.open())}
    assert settings == {"0.5 refresh=2"}
    result = CliRunner().invoke(
        batch_main,
        ["score", str(audio), "-o", str(out), "--incremental", "--segmentation", "vad",
         "--vad-context", "0.5", "--vad-refresh", "2", "--vad-sentence-pause", "1",
         "--vad-sentence-part", "0.8"],
    )  # fmt: skip
    assert "0 unchanged files kept" in result.output  # and the sentence rule
    settings = {row["settings"].split("context=")[-1] for row in csv.DictReader(out.open())}
    assert settings == {"0.5 refresh=2 sentence_pause=1 sentence_part=0.8"}
    result = CliRunner().invoke(
        batch_main,
        ["score", str(audio), "-o", str(out), "--incremental", "--segmentation", "windows"],
    )
    assert "0 unchanged files kept" in result.output
    assert {row["settings"] for row in csv.DictReader(out.open())} == {"window=64000 hop=64000"}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--vad-min-silence", "0.01"], "at least twice the padding"),
        (["--vad-context", "nan"], "finite"),
        (["--vad-pad", "inf"], "finite"),
        (["--hop", "nan"], "not a finite number"),
        (["--speaker-from", "folder", "--vad-sentence-pause", "1"], "must be 0 in speaker mode"),
    ],
)
def test_impossible_vad_settings_are_one_line_before_any_work(tmp_path, option, message):
    sf.write(tmp_path / "a.wav", np.zeros(RATE, np.float32), RATE)
    result = CliRunner().invoke(
        batch_main,
        ["score", str(tmp_path / "a.wav"), "-o", str(tmp_path / "r.csv"), "--segmentation", "vad",
         *option],
    )  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r.csv").exists()


def test_the_settings_cell_tells_apart_settings_that_differ_past_six_digits():
    a, b = 0.6410822868347168, 0.6410823464393616  # both 0.641082 with six digits
    described = {Segmentation("vad", threshold=t).describe("f" * 64) for t in (a, b)}
    assert len(described) == 2
    assert "threshold=0.5 " in Segmentation("vad").describe("f" * 64)  # as before: same keys
    assert "sentence" not in Segmentation("vad", sentence_pause_s=0).describe("f" * 64)
    assert "sentence" not in Segmentation("vad").for_model(_metadata()).describe("f" * 64)
    gated = Segmentation("vad").for_model(_metadata(pool="speech"))
    assert gated.describe("f" * 64).endswith(" sentence_pause=1 sentence_part=1.2")


def test_an_egemaps_region_too_short_to_measure_is_left_out_not_the_whole_file():
    metadata = ModelMetadata("egemaps", ("a", "b"), RATE, "features", "probs")
    tiny = Segmentation("vad", min_speech_s=0.0, pad_s=0.0)
    frontend = SpeechFrontend(frontend_for(metadata), tiny)
    assert "sentence" not in frontend.settings  # no window: never joined, keys as before
    signal = bursts([(1.0, 3.0), (4.5, 6.0)], 6.5, seed=0)
    onset = 4 * RATE // FRAME + int(
        np.argmax(SileroVad().probabilities(signal)[4 * RATE // FRAME :] >= 0.5)
    )
    signal = signal[: (onset + 1) * FRAME]  # the file ends one frame into the second burst
    inputs = frontend.inputs(signal)
    found = SpeechTracker(tiny)
    regions = found.feed(SileroVad().probabilities(signal)) + found.finish(signal.size)
    assert any(r.end - r.start < 0.08 * RATE for r in regions), regions  # one is unmeasurable
    assert len(inputs.regions) == len(regions) - 1 >= 1
    assert len(inputs.rows) == len(inputs.regions) and np.isfinite(inputs.rows).all()


def _window_row(
    signal: np.ndarray, span: tuple[int, int], bounds: tuple[int, int], window: int
) -> np.ndarray:
    """The window a short region ``span`` is scored on, its context within ``bounds``."""
    left, right = bounds
    if right - left <= window:
        row = np.zeros(window, np.float32)
        pad = (window - (right - left)) // 2
        row[pad : pad + right - left] = signal[left:right]
        return row
    # more context than a window holds: the window centred on the region, within it
    begin = min(max((span[0] + span[1]) // 2 - window // 2, left), right - window)
    return signal[begin : begin + window]


@pytest.mark.parametrize("context_s", [0.0, 1.0, 2.0])
def test_a_short_region_is_seen_with_its_context_up_to_the_middle_of_each_pause(context_s):
    spans = [(1.0, 3.0), (6.0, 7.5), (11.0, 12.5)]
    signal = bursts(spans, 14.0, seed=0)
    window = 4 * RATE
    metadata = ModelMetadata("waveform", ("a", "b"), RATE, "audio", "probs", window_s=4.0)
    segmentation = Segmentation("vad", context_s=context_s)
    inputs = SpeechFrontend(WaveformFrontend(metadata), segmentation).inputs(signal)
    regions = inputs.regions
    assert len(regions) == 3 and len(inputs.rows) == 3
    reach = round(context_s * RATE)
    bounded_by_pause = []
    for index, (start, end) in enumerate(regions):
        middle_before = (regions[index - 1][1] + start) // 2 if index else 0
        middle_after = (end + regions[index + 1][0]) // 2 if index < 2 else signal.size
        left, right = max(start - reach, middle_before), min(end + reach, middle_after)
        bounded_by_pause.append(left == middle_before and index > 0)
        expected = _window_row(signal, (start, end), (left, right), window)
        assert np.array_equal(inputs.rows[index], expected), (context_s, index)
    # 2 s reaches past the middle of the 3 s pauses; 1 s does not
    assert any(bounded_by_pause) == (context_s == 2.0)


def test_a_non_finite_hop_is_refused_through_the_api_too():
    metadata = ModelMetadata("waveform", ("a", "b"), RATE, "audio", "probs", window_s=4.0)
    for hop in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            WaveformFrontend(metadata, hop)


def test_close_regions_that_fit_one_window_are_joined_into_sentences():
    def region(start: float, end: float) -> Region:
        return Region(round(start * RATE), round(end * RATE))

    a, b, c, d = region(1.0, 2.0), region(2.6, 3.5), region(6.0, 7.0), region(7.5, 10.5)
    second, window = RATE, 4 * RATE  # c and d are 0.5 s apart but span 4.5 s together
    assert join_sentences([a, b, c, d], second, window) == [[a, b], [c], [d]]
    assert join_sentences([a, b, c, d], 0, window) == [[a], [b], [c], [d]]
    assert join_sentences([a, b, c, d], second // 2, window) == [[a], [b], [c], [d]]  # 0.6 s
    assert join_sentences([a, b, c, d], second, 5 * RATE) == [[a, b], [c, d]]
    # a pause of exactly the limit is not joined; a sample less is
    e = Region(a.end + second, a.end + second + RATE // 2)
    assert join_sentences([a, e], second, window) == [[a], [e]]
    nearer = Region(e.start - 1, e.end)
    assert join_sentences([a, nearer], second, window) == [[a, nearer]]
    # a sentence fits one window from its first region, not from its last
    f, g, h = region(0.0, 1.0), region(1.5, 2.5), region(3.0, 4.2)
    assert join_sentences([f, g, h], second, window) == [[f, g], [h]]
    assert join_sentences([f, g, h], second, 5 * RATE) == [[f, g, h]]
    # with a part length, only a pair with a region shorter than it is joined
    assert join_sentences([a, b], second, window, part=round(0.95 * RATE)) == [[a, b]]
    assert join_sentences([a, b], second, window, part=round(0.8 * RATE)) == [[a], [b]]


def test_a_sentence_is_scored_on_one_window_that_each_of_its_regions_gets():
    spans = [(1.0, 2.0), (2.6, 3.6), (7.0, 8.5), (12.0, 13.5)]
    signal = bursts(spans, 15.0, seed=0)
    alone = _frontend().inputs(signal)  # a model pooling over every frame: each alone
    joined = _frontend(pool="speech").inputs(signal)  # over speech: 1 s pauses, a part < 1.2 s
    for same, settings in ((joined, dict(sentence_pause_s=1.0)), (alone, dict(pool="speech",
                           sentence_pause_s=0.0))):  # fmt: skip
        assert np.array_equal(_frontend(**settings).inputs(signal).rows, same.rows)
    assert np.array_equal(joined.regions, alone.regions) and len(joined.regions) == 4
    assert np.array_equal(joined.region_of_row, [0, 1, 2, 3])
    assert np.array_equal(joined.starts, alone.starts) and np.array_equal(joined.ends, alone.ends)
    (first, _), (_, last) = joined.regions[0], joined.regions[1]
    right = min(last + RATE, (last + joined.regions[2][0]) // 2)
    sentence = _window_row(signal, (first, last), (max(first - RATE, 0), right), 4 * RATE)
    assert np.array_equal(joined.rows[0], sentence) and np.array_equal(joined.rows[1], sentence)
    assert not np.array_equal(alone.rows[0], alone.rows[1])
    assert np.array_equal(joined.rows[2:], alone.rows[2:])  # 3.5 s apart: each alone
    for block in (3_000, 7_001, 16_000 * 5):
        chunks = list(
            _frontend(pool="speech").stream_inputs(
                signal[s : s + block] for s in range(0, signal.size, block)
            )
        )
        assert len(chunks) > 1
        for name in ("rows", "starts", "ends", "regions"):
            streamed = np.concatenate([getattr(chunk, name) for chunk in chunks])
            assert np.array_equal(streamed, getattr(joined, name)), (block, name)


def test_the_sentence_pause_reaches_the_cli_and_the_settings_cell(tmp_path):
    audio = tmp_path / "talk.wav"
    sf.write(audio, bursts([(1.0, 2.0), (2.6, 3.6), (7.0, 8.5)], 10.0, seed=0), RATE)
    cells = {}
    for pause in ("0", "1"):
        cells[pause] = _score(
            [audio], tmp_path / f"r{pause}.csv", "--vad-sentence-pause", pause,
            "--segments", tmp_path / f"r{pause}.segments.csv",
        )  # fmt: skip
    assert "sentence_pause" not in cells["0"][0]["settings"]
    default = _score([audio], tmp_path / "r.csv")  # the test model pools over every frame
    assert default[0]["settings"] == cells["0"][0]["settings"]
    assert cells["1"][0]["settings"].endswith(" sentence_pause=1 sentence_part=1.2")
    segments = {
        pause: list(csv.DictReader((tmp_path / f"r{pause}.segments.csv").open())) for pause in cells
    }
    assert [len(rows) for rows in segments.values()] == [3, 3]
    joined = segments["1"]
    assert joined[0]["p_neutral"] == joined[1]["p_neutral"] != joined[2]["p_neutral"]
    assert segments["0"][0]["p_neutral"] != segments["0"][1]["p_neutral"]


def test_speaker_mode_scores_every_region_alone_by_default():
    plain = RunOptions("r.csv", segmentation="vad").segmenting()
    speakers = RunOptions("r.csv", segmentation="vad", speaker_from="folder").segmenting()
    assert plain.sentence_pause_s is None  # the model's own, settled when it is loaded
    with pytest.raises(ValueError, match="not settled"):
        plain.sentence_pause  # noqa: B018 (never read as 0 before it is settled)
    for pool, pause in (("speech", 1.0), (None, 0.0)):  # by the frontend itself, however built
        frontend = SpeechFrontend(WaveformFrontend(_metadata(pool=pool)), plain)
        assert frontend.segmentation.sentence_pause_s == pause
    assert plain.for_model(_metadata(pool="speech")).sentence_pause_s == 1.0
    assert speakers.sentence_pause_s == 0
    assert speakers.for_model(_metadata(pool="speech")).sentence_pause_s == 0
    assert "sentence" not in speakers.describe("f" * 64)  # speaker runs keep their keys
    explicit = RunOptions("r.csv", segmentation="vad", vad_sentence_pause=0.5).segmenting()
    assert explicit.sentence_pause_s == 0.5


def test_a_sentence_waits_for_its_pause_when_the_context_is_shorter():
    """With no context, only the sentence pause says when no later region can join: a
    sentence emitted sooner would be cut at a block boundary."""
    spans = [(1.0, 1.8), (3.8, 4.5), (8.0, 9.0), (10.5, 11.2)]
    signal = bursts(spans, 13.0, seed=2)
    settings = dict(context_s=0.0, sentence_pause_s=2.5, sentence_part_s=1.2)
    whole = _frontend(**settings).inputs(signal)
    assert len(whole.regions) == 4
    assert np.array_equal(whole.rows[0], whole.rows[1])  # 2 s apart: one sentence
    assert np.array_equal(whole.rows[2], whole.rows[3])
    for block in (1_000, 3_001, 7_001):
        chunks = list(
            _frontend(**settings).stream_inputs(
                signal[s : s + block] for s in range(0, signal.size, block)
            )
        )
        for name in ("rows", "starts", "ends", "regions"):
            streamed = np.concatenate([getattr(chunk, name) for chunk in chunks])
            assert np.array_equal(streamed, getattr(whole, name)), (block, name)
