"""ser-batch score --sessions N: parallel ONNX Runtime sessions, the same report for any N."""

import json
import sys

import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch.cli import main
from ser.batch.provenance import provenance_path
from ser.batch.run import default_workers
from ser.batch.session import SessionPool, cpu_count, default_sessions, split_threads

from synth import class_signal


def test_one_and_three_sessions_write_identical_reports_and_segments(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    for n, seconds in enumerate([0.6, 1.0, 2.7, 0.9, 5.3, 1.2, 0.5, 9.1, 1.5, 3.3, 0.7, 1.1]):
        sf.write(audio / f"f{n:02d}.wav", class_signal(n % 8, seconds, seed=n), 16_000)
    sf.write(audio / "long.wav", class_signal(3, 61.0, seed=99), 16_000)  # streamed in blocks
    (audio / "bad.wav").write_bytes(b"not audio")
    outputs = {}
    for sessions in ("1", "3"):
        report, segments = tmp_path / f"r{sessions}.csv", tmp_path / f"s{sessions}.csv"
        args = ["score", str(audio), "-o", str(report), "--segments", str(segments),
                "--sessions", sessions, "--batch-size", "4"]  # fmt: skip
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3, result.output  # bad.wav
        outputs[sessions] = (report.read_text(), segments.read_text())
        engine = json.loads(provenance_path(report).read_text())["engine"]
        assert engine["engine"] == "local" and engine["sessions"] == int(sessions)
    assert outputs["1"] == outputs["3"]
    assert outputs["1"][0].count("\n") == 15 and outputs["1"][1].count("\n") > 30


@pytest.mark.parametrize(
    ("threads", "sessions", "each"), [(None, 1, cpu_count()), (4, 2, 2), (3, 2, 1), (1, 3, 1)]
)
def test_threads_are_split_among_sessions_at_least_one_each(threads, sessions, each):
    assert split_threads(threads, sessions) == each


def test_the_default_is_one_session_per_core_on_the_cpu_and_one_on_cuda(monkeypatch):
    assert default_sessions("cpu") == min(cpu_count(), 8)
    monkeypatch.setattr("ser.batch.session.cpu_count", lambda: 64)
    assert (default_sessions("cpu"), split_threads(None, default_sessions("cpu"))) == (8, 8)
    monkeypatch.undo()
    assert default_sessions("cuda") == 1
    pool = SessionPool("forest", threads=2, sessions=2)
    assert (pool.sessions, pool.threads_per_session, len(pool.members)) == (2, 1, 2)
    assert pool.labels == pool.members[1].labels and pool.sha256 == pool.members[1].sha256


def test_engine_ray_without_ray_installed_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    sf.write(tmp_path / "a.wav", class_signal(1, 1.0, seed=1), 16_000)
    args = ["score", str(tmp_path / "a.wav"), "-o", str(tmp_path / "r.csv"), "--engine", "ray"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        "Error: --engine ray needs Ray: pip install 'ser-toolkit[ray]'"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "a.wav"]


@pytest.mark.parametrize(
    ("provider", "workers"), [("CUDAExecutionProvider", 4), ("CPUExecutionProvider", 2)]
)
def test_decoding_threads_default_to_four_on_cuda_and_two_elsewhere(provider, workers):
    assert default_workers(provider) == workers


def test_a_stopped_run_leaves_a_long_file_at_its_next_chunk_not_at_its_end(tmp_path):
    """With several sessions, a stop (SIGINT, SIGTERM) once waited for the long file being
    scored to its end: minutes for an hours-long file, one batch of its own."""
    import os
    import signal
    import time
    from types import SimpleNamespace

    import numpy as np

    from ser.batch.cli import Interrupted, _stop_signals_raise
    from ser.batch.discovery import Found
    from ser.batch.frontends import ModelInputs
    from ser.batch.scoring import Prepared, score_prepared

    chunks = []

    def stream():
        for n in range(300):
            chunks.append(n)
            if n == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler stops the main thread
            time.sleep(0.01)
            yield ModelInputs(
                np.zeros((1, 8), np.float32), np.array([n * 8]), np.array([n * 8 + 8])
            )

    model = SimpleNamespace(
        sessions=2, metadata=SimpleNamespace(sample_rate=16_000),
        predict=lambda rows: np.full((len(rows), 2), 0.5, np.float32),
    )  # fmt: skip
    long = Prepared(Found.of(tmp_path / "long.wav"), stream=stream)
    with pytest.raises(Interrupted), _stop_signals_raise():
        list(score_prepared([long], model))
    assert len(chunks) < 50, len(chunks)  # stopped within a few chunks, not after all 300
