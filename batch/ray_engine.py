"""``--engine ray``: a Ray cluster's actors decode and score groups of files; the driver the rest.

The driver (:func:`ser.batch.run.run_scoring`) keeps what makes a report trustworthy: the lock,
discovery, the incremental keys, the journal, the atomic report and its provenance. Here it
hands the files to score to Ray Data as small groups; a pool of actors (one ONNX Runtime
session each, one GPU each with ``--device cuda``) decodes and scores each group through the
same path as the local engine (:func:`ser.batch.engine.score_found`, :class:`RowFormat`), and
the rows stream back to the driver, which journals them as they arrive. An actor that dies is
restarted by Ray and its group scored again; the driver keeps one row per file.

The model travels as bytes (every actor checks its SHA-256), so workers need no copy of it;
files are read by their path as the driver found it (a shared filesystem, relative to the
driver's folder where that folder exists on the worker) or by object URI (``s3://``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ser.batch.discovery import Found
from ser.batch.engine import RowFormat, Scored, score_found
from ser.batch.records import location_from_cell
from ser.batch.report import path_cell
from ser.batch.segmentation import Segmentation
from ser.batch.session import ScoringModel, resolve_model
from ser.errors import ModelError, SerError
from ser.models import SHIPPED

if TYPE_CHECKING:
    from ser.batch.run import RunOptions

GROUPS_PER_ACTOR = 4
"""Each actor gets about this many groups, so that a slow group or a restart evens out."""
RAY_DECODE_THREADS = 2
"""Decoding threads in each actor, whose one session shares its CPUs with them."""


class RayEngine:
    """Scores on a Ray cluster (``options.ray_address``: none starts a local Ray instance)."""

    def __init__(self, options: RunOptions) -> None:
        self._ray = _import_ray()
        self.options = options
        # The driver reads the model's contract and hash on its CPU; the actors run the same
        # file on their device (a shipped name on CUDA: its CUDA variant, as locally).
        path = resolve_model(options.model, cuda=options.device == "cuda")
        self.model = ScoringModel(str(path), device="cpu", threads=1)
        self.model.name = options.model if options.model in SHIPPED else path.name
        self.address: str | None = None
        self.actors = 0
        self.cpus_per_actor = 1

    def rows(self, todo: Sequence[Found], fmt: RowFormat) -> Iterator[Scored]:
        """Every file of ``todo`` once, in the order the actors finish their groups."""
        if not todo:
            return
        ray = self._ray
        started_here = _connect(ray, self.options.ray_address)
        try:
            yield from self._run(ray, todo, fmt)
        finally:
            if started_here:
                ray.shutdown()

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "ray",
            "ray_address": self.options.ray_address or "local",
            "cluster": self.address,
            "workers": self.actors,
            "cpus_per_worker": self.cpus_per_actor,
            "gpus_per_worker": 1 if self.options.device == "cuda" else 0,
            "decode_workers": self.options.workers or RAY_DECODE_THREADS,
            "segmentation": self.options.segmentation,
        }

    def _run(self, ray: Any, todo: Sequence[Found], fmt: RowFormat) -> Iterator[Scored]:
        options = self.options
        self.address = ray.get_runtime_context().gcs_address
        gpus = 1 if options.device == "cuda" else 0
        self.cpus_per_actor = options.threads or 1
        _check_fits(ray, self.cpus_per_actor, gpus)
        self.actors = min(
            len(todo), options.sessions or _cluster_actors(ray, self.cpus_per_actor, gpus)
        )
        group = group_size(len(todo), self.actors, options.batch_size)
        items = [{"index": index, "found": _found_json(found)} for index, found in enumerate(todo)]
        dataset = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / group))
        scorer = dict(
            model=self.model.path.read_bytes(), sha256=self.model.sha256, fmt=vars(fmt),
            device=options.device, threads=self.cpus_per_actor, hop=options.hop,
            batch_size=options.batch_size, workers=options.workers or RAY_DECODE_THREADS,
            cwd=os.getcwd(), segmentation=vars(options.segmenting()),
        )  # fmt: skip
        scored = dataset.map_batches(
            GroupScorer, fn_constructor_kwargs=scorer, batch_size=group, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=self.actors), num_cpus=self.cpus_per_actor,
            num_gpus=gpus or None,
        )  # fmt: skip
        for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
            for index, row, segments in zip(
                batch["index"], batch["row"], batch["segments"], strict=True
            ):
                yield int(index), json.loads(row), json.loads(segments), None


class GroupScorer:
    """A Ray actor's work: decode and score each group of files it is given, rows out.

    One ONNX Runtime session per actor, loaded once from the driver's model bytes.
    """

    def __init__(
        self,
        *,
        model: bytes,
        sha256: str,
        fmt: dict[str, Any],
        device: str,
        threads: int,
        hop: float | None,
        batch_size: int,
        workers: int,
        cwd: str,
        segmentation: dict[str, Any],
    ) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ser-ray-model-")
        path = Path(self._folder.name) / "model.onnx"
        path.write_bytes(model)
        self.model = ScoringModel(str(path), device=device, threads=threads)
        if self.model.sha256 != sha256:
            raise ModelError(f"the model reached this worker damaged (SHA-256 {self.model.sha256})")
        self.fmt = RowFormat(**{**fmt, "labels": tuple(fmt["labels"])})
        self.hop, self.batch_size, self.workers = hop, batch_size, workers
        self.segmentation = Segmentation(**segmentation)  # as the driver's: the same rows
        if os.path.isdir(cwd):  # relative paths mean what they mean on the driver
            os.chdir(cwd)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = [_found_from_json(text) for text in batch["found"]]
        scores = score_found(
            found, self.model, hop=self.hop, batch_size=self.batch_size, workers=self.workers,
            segmentation=self.segmentation,
        )  # fmt: skip
        rows, segments = [], []
        for score in scores:
            row, windows = self.fmt.rows(score)
            rows.append(json.dumps(row, ensure_ascii=False))
            segments.append(json.dumps(windows, ensure_ascii=False))
        return {
            "index": np.asarray(batch["index"], np.int64),
            "row": np.asarray(rows, dtype=object),
            "segments": np.asarray(segments, dtype=object),
        }


def group_size(files: int, actors: int, batch_size: int) -> int:
    """Files per group: about :data:`GROUPS_PER_ACTOR` groups per actor, at most 4 batches."""
    return max(1, min(4 * batch_size, math.ceil(files / (GROUPS_PER_ACTOR * max(actors, 1)))))


def _found_json(found: Found) -> str:
    """A found file for a worker: its path in the report's reversible form, size and time."""
    return json.dumps(
        [path_cell(found.path), found.error, found.size_bytes, found.mtime_ns], ensure_ascii=False
    )


def _found_from_json(text: str) -> Found:
    cell, error, size, mtime = json.loads(text)
    return Found(location_from_cell(cell), error, size, mtime)


def _check_fits(ray: Any, cpus: int, gpus: int) -> None:
    """Refuse a run that no node can host one actor of (``--threads`` CPUs, a GPU with
    ``--device cuda``): Ray would wait for them forever, saying nothing.

    Raises:
        SerError: naming what is missing.
    """
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]
    held = [(node.get("CPU", 0), node.get("GPU", 0)) for node in nodes]
    if held and not any(cpu >= cpus and gpu >= gpus for cpu, gpu in held):
        needs = f"{cpus} CPUs" + (f" and {gpus} GPU" if gpus else "")
        raise SerError(
            f"--engine ray: no node of the cluster has what one scoring actor needs ({needs}; "
            f"the largest node has {max(c for c, _ in held):g} CPUs and "
            f"{max(g for _, g in held):g} GPUs): lower --threads, or use --device cpu"
        )


def _cluster_actors(ray: Any, cpus: int, gpus: int) -> int:
    """One actor per GPU with ``gpus``, else per ``cpus`` CPUs of the cluster (at least one)."""
    resources = ray.cluster_resources()
    if gpus:
        return max(1, int(resources.get("GPU", 0)))
    return max(1, int(resources.get("CPU", 1) // cpus))


def _connect(ray: Any, address: str | None) -> bool:
    """Connect to ``address`` (none: start a local instance); False if already connected.

    Ray's own log lines and progress bars are turned down: the driver prints its own.
    """
    if ray.is_initialized():  # a program that embeds ser keeps its own connection
        return False
    on_term = signal.getsignal(signal.SIGTERM)
    ray.init(
        address=address or "local", include_dashboard=False, log_to_driver=False,
        logging_level=logging.ERROR, configure_logging=True,
    )  # fmt: skip
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)  # Ray's own exits 15 with no word: ser's says why
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return True


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise SerError("--engine ray needs Ray: pip install 'ser-toolkit[ray]'") from None
    return ray
