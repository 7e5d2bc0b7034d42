"""ser-batch score --engine ray: a two-node Ray cluster on this machine, and a local S3 server.

One cluster (``ray.cluster_utils.Cluster``: a head and a second node, one CPU each) and one S3
server (moto's server mode on 127.0.0.1) serve the whole module. Models are the shipped forest,
whose scores are batch-invariant, so the Ray engine's groups and the local engine's batches
must give identical reports.
"""

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner

from ser.batch.cli import main
from ser.batch.journal import journal_path, read_journal
from ser.batch.provenance import provenance_path
from ser.batch.report import read_report

from synth import bursts, class_signal

ray = pytest.importorskip(
    "ray", reason="the ray extra is not installed (pip install 'ser-toolkit[ray]')"
)
SER_BATCH = str(Path(sys.executable).with_name("ser-batch"))
ODD = [b"plain.wav", b"not-utf8-\xff.wav", b"line\nbreak.wav", b"=formula.wav"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 server (moto) on 127.0.0.1, its endpoint and test keys in the environment."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (the test extra)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        keys = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
        for key, value in keys.items():
            env.setenv(key, value)
        try:
            _wait_for(port)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """Two simulated Ray nodes of one CPU each; this process is connected as a driver.

    The nodes start after the S3 fixture so their workers inherit its environment; the driver
    connects from a scratch folder, since Ray puts the driver's folder first on its workers'
    import path (from the checkout, ``ser/`` would shadow the installed package).
    """
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
    nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    nodes.add_node(**node)
    nodes.wait_for_nodes()
    with pytest.MonkeyPatch.context() as scratch:
        scratch.chdir(tmp_path_factory.mktemp("driver"))
        ray.init(address=nodes.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the S3 server did not start on port {port}")


def _corpus(folder: Path, count: int, names=()) -> Path:
    folder.mkdir(parents=True)
    for n in range(count):
        sf.write(folder / f"f{n:02d}.wav", class_signal(n % 8, 0.6 + 0.1 * (n % 5), n), 16_000)
    for n, name in enumerate(names):
        sf.write(os.path.join(os.fsencode(folder), name), class_signal(n, 0.8, 50 + n), 16_000)
    (folder / "bad.wav").write_bytes(b"not audio")
    return folder


def _score(*args: str):
    return CliRunner().invoke(main, ["score", *args, "--model", "forest"])


def _ray(cluster) -> list[str]:
    return ["--engine", "ray", "--ray-address", cluster.address]


def test_two_nodes_write_the_local_engines_report_cell_for_cell(cluster, tmp_path):
    audio = _corpus(tmp_path / "audio", 14, ODD)
    reports = {}
    for engine, extra in (("local", []), ("ray", _ray(cluster))):
        report, segments = tmp_path / f"{engine}.csv", tmp_path / f"{engine}-s.csv"
        result = _score(str(audio), "-o", str(report), "--segments", str(segments), *extra)
        assert result.exit_code == 3, result.output  # bad.wav
        reports[engine] = (report.read_bytes(), segments.read_bytes())
    assert reports["ray"] == reports["local"]
    assert len(read_report(tmp_path / "ray.csv", "csv")) == 14 + len(ODD) + 1
    info = json.loads(provenance_path(tmp_path / "ray.csv").read_text())
    assert info["engine"]["engine"] == "ray" and info["engine"]["workers"] == 2
    assert info["engine"]["ray_address"] == cluster.address


def test_vad_segmentation_on_two_nodes_writes_the_local_engines_report_and_segments(
    cluster, tmp_path
):
    audio = tmp_path / "audio"
    audio.mkdir()
    for n in range(5):
        spans = [(0.5, 2.0 + 0.5 * n), (4.0 + 0.5 * n, 5.5 + n)]
        sf.write(audio / f"talk{n}.wav", bursts(spans, 8.0 + n, seed=2 * n), 16_000)
    sf.write(audio / "silent.wav", bursts([], 4.0), 16_000)  # quiet noise: no speech
    outputs = {}
    for engine, extra in (("local", []), ("ray", _ray(cluster))):
        report, segments = tmp_path / f"{engine}.csv", tmp_path / f"{engine}-s.csv"
        result = _score(str(audio), "-o", str(report), "--segments", str(segments),
                        "--segmentation", "vad", "--batch-size", "2", *extra)  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[engine] = (report.read_bytes(), segments.read_bytes())
    assert outputs["ray"] == outputs["local"]
    rows = {Path(row["path"]).name: row for row in read_report(tmp_path / "ray.csv", "csv")}
    assert rows["silent.wav"]["status"] == "no_speech"
    assert all(rows[f"talk{n}.wav"]["status"] == "ok" for n in range(5))
    assert all("vad=silero" in row["settings"] for row in rows.values())
    segment_rows = outputs["ray"][1].decode().splitlines()[1:]
    assert len(segment_rows) == 10  # two utterances in each talking file


def _sentence_rows(segments: bytes, name: str) -> list[list[str]]:
    """The probability cells of one file's segment rows, in time order."""
    rows = [r for r in csv.DictReader(io.StringIO(segments.decode())) if r["path"].endswith(name)]
    return [[v for k, v in row.items() if k.startswith("p_")] for row in rows]


def test_a_model_pooling_over_speech_joins_sentences_on_two_nodes_as_locally(
    cluster, gated_onnx, tmp_path
):
    """Ray's workers settle the sentence pause from the model's metadata as the local engine."""
    audio = tmp_path / "audio"
    audio.mkdir()
    for n in range(3):  # a fragment, 0.7 s of pause, the rest of its sentence; later, alone
        spans = [(0.5, 1.0), (1.7, 3.0 + 0.1 * n), (6.0, 7.5)]
        sf.write(audio / f"talk{n}.wav", bursts(spans, 9.0, seed=n), 16_000)
    outputs = {}
    for engine, extra in (
        ("local", []),
        ("ray", _ray(cluster)),
        ("alone", ["--vad-sentence-pause", "0"]),
    ):
        report, segments = tmp_path / f"{engine}.csv", tmp_path / f"{engine}-s.csv"
        result = CliRunner().invoke(main, [
            "score", str(audio), "-o", str(report), "--segments", str(segments), "--model",
            str(gated_onnx), "--segmentation", "vad", "--batch-size", "2", *extra,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs[engine] = (report.read_bytes(), segments.read_bytes())
    assert outputs["ray"] == outputs["local"]
    rows = read_report(tmp_path / "ray.csv", "csv")
    assert len(rows) == 3 and all("sentence_pause=1 " in row["settings"] for row in rows)
    for n in range(3):
        joined = _sentence_rows(outputs["ray"][1], f"talk{n}.wav")
        alone = _sentence_rows(outputs["alone"][1], f"talk{n}.wav")
        assert len(joined) == len(alone) == 3
        assert joined[0] == joined[1] and alone[0] != alone[1]  # scored as one sentence
        assert joined[2] == alone[2]  # the last utterance stays alone


def test_a_worker_killed_mid_run_is_retried_and_the_report_is_complete(cluster, tmp_path):
    audio = _corpus(tmp_path / "audio", 60)
    report = tmp_path / "r.csv"
    killed = []

    def kill_an_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            lines = (
                journal_path(report).read_bytes().count(b"\n")
                if journal_path(report).exists()
                else 0
            )
            actors = _our_processes("GroupScorer") if lines >= 4 else []
            if actors:
                os.kill(actors[0], signal.SIGKILL)
                killed.append((actors[0], lines))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_an_actor)
    killer.start()
    result = _score(str(audio), "-o", str(report), "--batch-size", "1", "--workers", "1",
                    *_ray(cluster))  # fmt: skip
    killer.join()
    assert killed and killed[0][1] < 61, "no actor was killed while the run was going on"
    assert result.exit_code == 3, result.output
    rows = read_report(report, "csv")
    assert sorted(row["path"] for row in rows) == sorted(str(p) for p in audio.iterdir())
    assert [row["status"] for row in rows].count("ok") == 60


def test_an_actor_no_node_can_host_is_one_line_not_a_hang(cluster, tmp_path):
    audio = _corpus(tmp_path / "audio", 2)
    for extra in (["--threads", "2"], ["--device", "cuda"]):  # nodes of 1 CPU, no GPU
        result = _score(str(audio), "-o", str(tmp_path / "r.csv"), *_ray(cluster), *extra)
        assert result.exit_code != 0 and "no node of the cluster has" in result.output, extra
        assert "Traceback" not in result.output


def _driver_with_rows(cluster, tmp_path: Path, rows: int) -> tuple[subprocess.Popen, Path, Path]:
    """A Ray driver in its own process over 81 files, once its journal holds ``rows`` rows:
    the driver, its report and its corpus."""
    audio = _corpus(tmp_path / "audio", 80)
    report = tmp_path / "r.csv"
    command = [SER_BATCH, "score", str(audio), "-o", str(report), "--model", "forest",
               "--batch-size", "1", "--workers", "1", *_ray(cluster)]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as sink:
        driver = subprocess.Popen(command, stderr=sink, cwd=tmp_path)
    journal = journal_path(report)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and driver.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= rows:
            break
        time.sleep(0.05)
    assert driver.poll() is None, (tmp_path / "stderr.txt").read_text()
    return driver, report, audio


def test_sigterm_stops_a_ray_driver_with_ser_s_line_and_status(cluster, tmp_path):
    driver, _, _ = _driver_with_rows(cluster, tmp_path, 3)
    driver.send_signal(signal.SIGTERM)  # Ray's own handler would exit 15 without a word
    assert driver.wait(timeout=120) == 143, (tmp_path / "stderr.txt").read_text()
    assert "stopped by SIGTERM" in (tmp_path / "stderr.txt").read_text()


def test_the_driver_killed_then_incremental_gives_every_file_once(cluster, tmp_path):
    driver, report, audio = _driver_with_rows(cluster, tmp_path, 5)
    journal = journal_path(report)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    journaled = [entry.row["status"] for entry in read_journal(journal)]
    done = journaled.count("ok")  # an error row (bad.wav) is retried, not kept
    assert not report.exists() and 5 <= len(journaled) < 81
    result = _score(str(audio), "-o", str(report), "--incremental")  # the local engine
    assert result.exit_code == 3, result.output
    assert f"{done} unchanged files kept" in result.output
    paths = [row["path"] for row in read_report(report, "csv")]
    assert sorted(paths) == sorted(str(p) for p in audio.iterdir()) and len(set(paths)) == 81


def test_s3_inputs_score_through_both_engines_and_incremental_runs_recognise_them(
    cluster, s3, tmp_path
):
    import pyarrow.fs as pafs

    audio = _corpus(tmp_path / "audio", 6)
    store = pafs.S3FileSystem(endpoint_override=s3, allow_bucket_creation=True)
    store.create_dir("calls")
    for path in sorted(audio.iterdir()):
        with store.open_output_stream(f"calls/2026/{path.name}") as sink:
            sink.write(path.read_bytes())
    uri = "s3://calls/2026"
    on_disk, local, remote = tmp_path / "disk.csv", tmp_path / "local.csv", tmp_path / "ray.csv"
    assert _score(str(audio), "-o", str(on_disk)).exit_code == 3
    first = _score(uri, "-o", str(local))
    assert first.exit_code == 3, first.output
    assert _score(uri, "-o", str(remote), *_ray(cluster)).exit_code == 3
    assert remote.read_bytes() == local.read_bytes()
    rows = read_report(remote, "csv")
    assert [row["path"] for row in rows] == [f"{uri}/{p.name}" for p in sorted(audio.iterdir())]
    disk_rows = read_report(on_disk, "csv")
    for row, disk in zip(rows, disk_rows, strict=True):
        assert {k: v for k, v in row.items() if k not in ("path", "mtime_ns")} == {
            k: v for k, v in disk.items() if k not in ("path", "mtime_ns")
        }
    result = _score(uri, "-o", str(remote), "--incremental", *_ray(cluster))
    assert result.exit_code == 3 and "6 unchanged files kept" in result.output, result.output
    with store.open_output_stream("calls/2026/f01.wav") as sink:  # replaced: another size
        sink.write((audio / "f04.wav").read_bytes())
    result = _score(uri, "-o", str(remote), "--incremental", *_ray(cluster))
    assert "5 unchanged files kept" in result.output and "1 ok, 1 failed" in result.output
    after = {row["path"]: row for row in read_report(remote, "csv")}
    assert after[f"{uri}/f01.wav"]["label"] == disk_rows[4]["label"]
    assert _score("s3://calls/none", "-o", "-").exit_code == 6


def _our_processes(marker: str) -> list[int]:
    """Pids of this test process's descendants whose command line holds ``marker``."""
    parents, titles = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
                titles[int(entry.name)] = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
    ours = []
    for pid, title in titles.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if ancestor == os.getpid() and marker.encode() in title:
            ours.append(pid)
    return sorted(ours)
