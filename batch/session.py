"""An ONNX model ready to score: its ONNX Runtime session and the contract in its metadata."""

from __future__ import annotations

import hashlib
import os
import queue
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.errors import ModelError
from ser.metadata import ModelMetadata
from ser.models import SHIPPED, shipped_model_path

DEVICES = ("cpu", "cuda", "auto")


def resolve_model(name_or_path: str) -> Path:
    """A shipped model's name (``forest``) or a path to an ``.onnx`` file."""
    if name_or_path in SHIPPED:
        return shipped_model_path(name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise ModelError(
            f"{name_or_path}: no such model file, and not a shipped model "
            f"({', '.join(sorted(SHIPPED))})"
        )
    return path


def execution_providers(device: str) -> list[str]:
    """ONNX Runtime providers for ``device``; asking for CUDA where it cannot load is an error."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise ModelError(
                "--device cuda: the CUDA execution provider is not available in this onnxruntime "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    raise ModelError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


class ScoringModel:
    """One loaded model: ``predict`` maps model inputs to class probabilities."""

    def __init__(
        self, name_or_path: str, *, device: str = "cpu", threads: int | None = None
    ) -> None:
        self.path = resolve_model(name_or_path)
        self.name = name_or_path if name_or_path in SHIPPED else self.path.name
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        providers = execution_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own untyped errors for bad files
            reason = " ".join(str(error).split())[:200]
            raise ModelError(f"{self.path}: not a loadable ONNX model ({reason})") from None
        if device == "cuda" and "CUDAExecutionProvider" not in self.session.get_providers():
            raise ModelError("--device cuda: onnxruntime could not start the CUDA provider")
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ModelMetadata.from_props(props, source=str(self.path))
        self.provider = self.session.get_providers()[0]
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, labels]`` for a batch of model inputs."""
        return self.session.run(
            [self.metadata.probs_name], {self.metadata.input_name: inputs.astype(np.float32)}
        )[0]


def cpu_count() -> int:
    """The cores this process may run on (its affinity, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


MAX_DEFAULT_SESSIONS = 8
"""Each session holds its own copy of the model and buffers (about 130 MB for the shipped one):
past 8, more cores give each session more threads rather than more sessions."""


def default_sessions(device: str) -> int:
    """Sessions for a plain ``ser-batch score``: one per core (at most 8) on the CPU, one on CUDA.

    Measured (README, "Parallel sessions"): sessions of one thread each, fed whole batches,
    beat one session with all the threads, whose intra-op parallelism idles between the small
    operators of a 4 s window.
    """
    return 1 if device == "cuda" else min(cpu_count(), MAX_DEFAULT_SESSIONS)


def split_threads(threads: int | None, sessions: int) -> int:
    """Intra-op threads per session: ``threads`` (default: every core) shared out, at least 1."""
    return max(1, (threads or cpu_count()) // sessions)


class SessionPool:
    """``sessions`` ONNX Runtime sessions of one model, with the threads split among them.

    :meth:`predict` runs on whichever session is free, so callers in several threads (the
    scorer feeds each a whole batch) run in parallel. Every other attribute (``metadata``,
    ``sha256``, ``provider``...) is the first session's: all load the same file.
    """

    def __init__(
        self,
        name_or_path: str,
        *,
        device: str = "cpu",
        threads: int | None = None,
        sessions: int | None = None,
    ) -> None:
        self.sessions = sessions or default_sessions(device)
        self.threads_per_session = split_threads(threads, self.sessions)
        self.members = [
            ScoringModel(name_or_path, device=device, threads=self.threads_per_session)
            for _ in range(self.sessions)
        ]
        self._free: queue.SimpleQueue[ScoringModel] = queue.SimpleQueue()
        for member in self.members:
            self._free.put(member)

    def __getattr__(self, name: str):
        if name == "members":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.members[0], name)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.members[0].labels

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, labels]`` for a batch of model inputs, on a free session."""
        member = self._free.get()
        try:
            return member.predict(inputs)
        finally:
            self._free.put(member)
