"""Files per second of each engine on the same files, start-up apart: sessions, Ray, two nodes.

    python benchmarks/scale.py [--model NAME_OR_PATH] [--data DIR ...] [--sessions 1,2,3]

Every configuration runs ``run_scoring`` (what ``ser-batch score`` runs) on all the files into
a fresh report: the local engine with one session (all the threads) and with each count in
``--sessions`` (one thread each, up to the cores), Ray on a local instance with 1 and 2
actors, and Ray on two simulated nodes of one CPU each (``ray.cluster_utils.Cluster``, started
before the clock, as a cluster is). Start-up is the time from the call to the first row (for
Ray: starting or joining the cluster, the actors, the model and their first group); the rate is
measured from the first row to the last, so it is what the engine sustains. Each report is
compared with the first configuration's, cell for cell.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import click

sys.path.insert(0, str(Path(__file__).parent))
import ser.batch.run as run
from ser.batch.discovery import discover
from ser.batch.progress import Progress
from ser.batch.report import read_report
from ser.batch.run import RunOptions, run_scoring
from ser.batch.session import cpu_count
from ser.models import DEFAULT_MODEL

from common import RAVDESS_16K, describe_machine


class _Stamps(Progress):
    """Progress that also records when each row reached the driver."""

    times: ClassVar[list[float]] = []

    def update(self, ok: bool, audio_s: float) -> None:
        _Stamps.times.append(time.perf_counter())
        super().update(ok, audio_s)


def measure(data: list[str], options: RunOptions) -> tuple[float, float, float, list[dict]]:
    """Start-up (s), sustained files/s, end-to-end files/s, and the report's rows."""
    _Stamps.times = []
    started = time.perf_counter()
    run_scoring(data, options)
    wall = time.perf_counter() - started
    stamps = _Stamps.times
    first = stamps[0]
    burst = sum(stamp - first < 0.05 for stamp in stamps)  # rows that came with the first
    rate = (len(stamps) - burst) / max(stamps[-1] - first, 1e-9)
    rows = read_report(Path(options.output), "csv")
    return first - started, rate, len(stamps) / wall, rows


@click.command()
@click.option("--model", default=DEFAULT_MODEL, show_default=True)
@click.option("--data", multiple=True, type=click.Path(exists=True), default=[str(RAVDESS_16K)])
@click.option("--sessions", default="2,3", show_default=True, help="Session counts to try.")
@click.option("--ray/--no-ray", "with_ray", default=True, show_default=True)
def main(model: str, data: tuple[str, ...], sessions: str, with_ray: bool) -> None:
    run.Progress = _Stamps
    files = len(discover(list(data)))
    load = os.getloadavg()
    print(f"model {model}; {files} files from {', '.join(data)}")
    print(f"machine: {describe_machine()}; load average before: {load[0]:.2f} {load[1]:.2f}")
    configs: list[tuple[str, dict]] = [("local, 1 session x all threads", {"sessions": 1})]
    configs += [
        (f"local, {n} sessions x {max(1, cpu_count() // n)} thread", {"sessions": n})
        for n in (int(text) for text in sessions.split(","))
    ]
    if with_ray:
        configs += [
            ("Ray local instance, 1 actor", {"engine": "ray", "sessions": 1}),
            ("Ray local instance, 2 actors", {"engine": "ray", "sessions": 2}),
            (
                "Ray, 2 simulated nodes x 1 CPU, 2 actors",
                {"engine": "ray", "sessions": 2, "nodes": 2},
            ),
        ]
    print("| engine | start-up (s) | files/s sustained | files/s end to end | report |")
    print("|---|---|---|---|---|")
    reference = None
    for name, settings in configs:
        nodes = settings.pop("nodes", 0)
        cluster, extra = (_cluster(nodes), {}) if nodes else (None, {})
        if cluster is not None:
            extra = {"ray_address": cluster.address}
        try:
            with tempfile.TemporaryDirectory() as folder:
                options = RunOptions(output=f"{folder}/r.csv", model=model, **settings, **extra)
                startup, rate, whole, rows = measure(list(data), options)
        finally:
            if cluster is not None:
                cluster.shutdown()
        reference = reference or rows
        same = _compare(reference, rows)
        print(f"| {name} | {startup:.1f} | {rate:.1f} | {whole:.1f} | {same} |", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _cluster(nodes: int):
    from ray.cluster_utils import Cluster

    started = time.perf_counter()
    head = {"num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    print(f"({nodes} simulated nodes started in {time.perf_counter() - started:.1f} s)")
    return cluster


def _compare(reference: list[dict], rows: list[dict]) -> str:
    """'identical', or how many cells differ and the largest probability difference."""
    if rows == reference:
        return "identical"
    cells = sum(a[key] != b[key] for a, b in zip(reference, rows, strict=True) for key in a)
    largest = max(
        abs(float(a[key]) - float(b[key]))
        for a, b in zip(reference, rows, strict=True)
        for key in a
        if key.startswith("p_") and a[key] and b[key]
    )
    return f"{cells} cells differ (max dp {largest:.4f})"


if __name__ == "__main__":
    main()
