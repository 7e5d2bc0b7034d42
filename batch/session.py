"""An ONNX model ready to score: its ONNX Runtime session and the contract in its metadata.

Devices. ``cpu`` is the default. ``cuda`` needs the GPU build of ONNX Runtime; asking for it
where that build or a GPU is missing is a one-line :class:`DeviceError` naming what to install,
never a silent fall-back. ``auto`` takes CUDA where the model runs there, else the CPU.

Model choice. On CUDA a shipped model's name picks its CUDA variant (``ser.models``): the
int8 graph that is fastest on the CPU is covered only in part by the CUDA provider.

Node placement. ONNX Runtime moves nodes that its CUDA provider lacks to the CPU, copying
tensors back and forth, and says so only in a log line. So a CUDA session's first run (a probe
window) is profiled, and the profile says which provider ran each node. A node that handles
data on the CPU (more than shape arithmetic: an output or weights of 1 KiB or more) makes
``cuda`` an error and ``auto`` fall back to the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import queue
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.errors import DeviceError, ModelError
from ser.metadata import ModelMetadata
from ser.models import SHIPPED, shipped_model_path

DEVICES = ("cpu", "cuda", "auto")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_INSTALL = 'pip uninstall -y onnxruntime && pip install "onnxruntime-gpu[cuda,cudnn]~=1.31.1"'
DATA_BYTES = 1024
"""A node on the CPU whose output or weights reach this size handles data, not shapes."""


def resolve_model(name_or_path: str, *, cuda: bool = False) -> Path:
    """A shipped model's name (``forest``; its CUDA variant if ``cuda``) or an ``.onnx`` path."""
    if name_or_path in SHIPPED:
        return shipped_model_path(name_or_path, cuda=cuda)
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
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise DeviceError(
                "--device cuda: the CUDA execution provider is not available in this onnxruntime "
                f"{ort.__version__} (available: {', '.join(available)}); install the GPU build "
                f"({GPU_INSTALL}) or use --device cpu"
            )
        return [CUDA, CPU]
    if device == "auto":
        return [p for p in (CUDA, CPU) if p in available]
    raise DeviceError(f"unknown device {device!r}; expected one of {', '.join(DEVICES)}")


@dataclass(frozen=True)
class Placement:
    """Which provider ran which nodes in one profiled run."""

    ops: dict[str, Counter[str]]
    """Provider -> op type -> number of nodes."""
    data_on_cpu: Counter[str]
    """Op types of nodes that handled data (not just shapes) on the CPU."""

    def describe(self) -> dict[str, dict[str, int]]:
        return {provider: dict(sorted(ops.items())) for provider, ops in self.ops.items()}


def read_placement(profile: Path) -> Placement:
    """The node placement recorded in an ONNX Runtime profile (JSON trace events)."""
    ops: dict[str, Counter[str]] = {}
    data_on_cpu: Counter[str] = Counter()
    for event in json.loads(profile.read_text()):
        args = event.get("args", {})
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        provider, op = args.get("provider", "?"), args.get("op_name", "?")
        ops.setdefault(provider, Counter())[op] += 1
        size = max(int(args.get("output_size", 0)), int(args.get("parameter_size", 0)))
        if provider == CPU and size >= DATA_BYTES:
            data_on_cpu[op] += 1
    return Placement(ops, data_on_cpu)


def probe_input(session: ort.InferenceSession, metadata: ModelMetadata) -> np.ndarray:
    """One model input of the model's own shape (a window of quiet noise, or one feature row)."""
    window = round((metadata.window_s or 1.0) * metadata.sample_rate)
    dims = session.get_inputs()[0].shape
    shape = [
        dim if isinstance(dim, int) and dim > 0 else (1 if axis == 0 else window)
        for axis, dim in enumerate(dims)
    ]
    return (0.05 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)


class ScoringModel:
    """One loaded model: ``predict`` maps model inputs to class probabilities."""

    def __init__(
        self, name_or_path: str, *, device: str = "cpu", threads: int | None = None
    ) -> None:
        self.threads = threads
        providers = execution_providers(device)
        if CUDA not in providers:
            self._load(name_or_path, cuda=False)
            return
        try:
            self._load(name_or_path, cuda=True)
        except DeviceError as error:
            if device == "cuda":
                raise
            reason = str(error).removeprefix("--device cuda: ")
            print(f"--device auto: scoring on the CPU ({reason})", file=sys.stderr)
            self._load(name_or_path, cuda=False)

    def _load(self, name_or_path: str, *, cuda: bool) -> None:
        self.path = resolve_model(name_or_path, cuda=cuda)
        self.name = name_or_path if name_or_path in SHIPPED else self.path.name
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.placement: Placement | None = None
        with tempfile.TemporaryDirectory(prefix="ser-placement-") as folder:
            said = ""
            if cuda:
                said = _preload_cuda_libraries()
                options.enable_profiling = True
                options.profile_file_prefix = str(Path(folder) / "placement")
            self.session, created = _create_session(self.path, options, cuda=cuda)
            props = self.session.get_modelmeta().custom_metadata_map
            self.metadata = ModelMetadata.from_props(props, source=str(self.path))
            if cuda:
                self._check_cuda(said + created)
        self.provider = self.session.get_providers()[0]
        stat = self.path.stat()
        self.sha256 = _file_sha256(self.path, stat.st_size, stat.st_mtime_ns)

    def _check_cuda(self, said: str) -> None:
        """CUDA really started, and no node handles data on the CPU (DeviceError otherwise)."""
        if self.session.get_providers()[0] != CUDA:
            self.session.end_profiling()  # into the temporary folder, before it goes
            missing = re.findall(r"Failed to load (\S+?):", said)
            reason = (
                f"cannot load {', '.join(dict.fromkeys(missing))}"
                if missing
                else " ".join(said.split())[:300] or "no usable GPU or CUDA libraries found"
            )
            raise DeviceError(
                f"--device cuda: onnxruntime {ort.__version__} could not start the CUDA provider "
                f"({reason}); it needs an NVIDIA GPU and CUDA 13 with cuDNN 9 "
                f"({GPU_INSTALL}), or use --device cpu"
            )
        self.session.run(
            [self.metadata.probs_name],
            {self.metadata.input_name: probe_input(self.session, self.metadata)},
        )
        self.placement = read_placement(Path(self.session.end_profiling()))
        if self.placement.data_on_cpu:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.placement.data_on_cpu.items()))
            quantization = self.metadata.extra_json("quantization", {})
            quantized = isinstance(quantization, dict) and "int8" in str(quantization.get("kind"))
            hint = (
                "it is quantised to int8 for the CPU; score it with --device cpu, or give "
                "--model a float graph (ser-export neural without --quantize)"
                if quantized
                else "ONNX Runtime has no CUDA kernels for them; use --device cpu"
            )
            raise DeviceError(
                f"--device cuda: {sum(self.placement.data_on_cpu.values())} nodes of "
                f"{self.path.name} would run on the CPU ({ops}): {hint}"
            )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Probabilities ``[n, labels]`` for a batch of model inputs.

        Raises:
            ModelError: when the model answers with another shape (a wrong model file), which
                the caller turns into error rows for the batch's files.
        """
        return self._run([self.metadata.probs_name], inputs)[0]

    def predict_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities, speaker frame features (float16) and valid-frame masks of a batch,
        from one run of the graph (speaker mode's pass 1).

        Raises:
            ModelError: for a model without speaker outputs, or outputs of the wrong shape.
        """
        probs, frames, valid = self._run([self.metadata.probs_name, *self._speaker_outputs], inputs)
        return probs, frames.astype(np.float16), valid.astype(bool)

    @functools.cached_property
    def _speaker_outputs(self) -> tuple[str, str]:
        spec = speaker_spec(self.metadata, str(self.path))
        return spec["frames_name"], spec["valid_name"]

    def _run(self, names: list[str], inputs: np.ndarray) -> list[np.ndarray]:
        """The graph's ``names`` outputs for ``inputs``, each checked to have a row per input
        (and the probabilities, first, a column per label)."""
        outputs = self.session.run(names, {self.metadata.input_name: inputs.astype(np.float32)})
        expected = (len(inputs), len(self.metadata.labels))
        if outputs[0].shape != expected or any(len(out) != len(inputs) for out in outputs[1:]):
            shapes = ", ".join(str(out.shape) for out in outputs)
            raise ModelError(
                f"{self.path.name} returned probabilities of shape {shapes} for {len(inputs)} "
                f"inputs (expected {expected}); is it a ser model?"
            )
        return outputs


def speaker_spec(metadata: ModelMetadata, source: str) -> dict:
    """What the model says of its speaker mode (ModelError when it has none)."""
    spec = metadata.extra_json("speaker")
    if not isinstance(spec, dict) or "speaker_head" not in metadata.extra:
        raise ModelError(
            f"{source}: has no speaker-normalised head, so --speaker-from/--speakers cannot "
            "use it (export one trained with ser-train neural --normalize speaker)"
        )
    return spec


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
        with self._borrow() as member:
            return member.predict(inputs)

    def predict_features(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`ScoringModel.predict_features` on a free session."""
        with self._borrow() as member:
            return member.predict_features(inputs)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[ScoringModel]:
        """A free session, given back however the caller leaves."""
        member = self._free.get()
        try:
            yield member
        finally:
            self._free.put(member)


@functools.lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A model file's SHA-256, hashed once however many sessions load it (keyed by its stat)."""
    del size, mtime_ns  # part of the cache key only: a changed file is hashed again
    return hashlib.sha256(path.read_bytes()).hexdigest()


_preload_said: str | None = None


def _preload_cuda_libraries() -> str:
    """Load CUDA and cuDNN from the nvidia-* wheels that ``onnxruntime-gpu[cuda,cudnn]`` pulls;
    returns what ONNX Runtime printed meanwhile (the libraries it could not load).

    ONNX Runtime does not find them by itself unless PyTorch loaded them first, and ser-batch
    never imports PyTorch. Its messages are kept off stdout (which may carry the report) and
    end up, condensed, in the error that the session's check raises.
    """
    global _preload_said
    if _preload_said is None:
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.suppress(Exception):
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        _preload_said = said.getvalue()
    return _preload_said


def _create_session(
    path: Path, options: ort.SessionOptions, *, cuda: bool
) -> tuple[ort.InferenceSession, str]:
    """The session, and what ONNX Runtime printed while making it (its CUDA fall-back notes).

    ONNX Runtime prints to stdout, and logs to stderr, when the CUDA provider fails to start;
    stdout may carry the report, and the check after this one says what failed in one line, so
    the text is captured and the log is quiet meanwhile.
    """
    said = io.StringIO()
    if cuda:
        ort.set_default_logger_severity(4)
    try:
        with contextlib.redirect_stdout(said):
            session = ort.InferenceSession(
                str(path), options, providers=[CUDA, CPU] if cuda else [CPU]
            )
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        reason = " ".join(str(error).split())[:200]
        raise ModelError(f"{path}: not a loadable ONNX model ({reason})") from None
    finally:
        if cuda:
            ort.set_default_logger_severity(2)  # ONNX Runtime's default: warnings
    return session, said.getvalue()
