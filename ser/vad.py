"""Voice activity detection: Silero VAD's speech probability for every 32 ms frame.

The graph is recurrent: a frame's probability depends on the frames before it through an
LSTM state, and each frame is fed with the last 64 samples of the one before. A
:class:`VadStream` carries that state, that context and any partial frame from one block of
audio to the next, so a recording fed in blocks of any size gives the same probabilities, bit
for bit, as fed whole: a long file runs in flat memory. numpy and ONNX Runtime only, no torch.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.errors import ModelError
from ser.models import vad_model_path

FRAME = 512
"""Samples per VAD frame at 16 kHz (32 ms): frame ``i`` covers ``[FRAME*i, FRAME*(i+1))``."""
CONTEXT = 64
"""Samples of the previous frame fed before each frame."""
MAX_FRAMES_PER_CALL = 512
"""Frames per ONNX Runtime call (16 s): enough to make the per-call overhead negligible."""
_STATE = (1, 1, 128)


class SileroVad:
    """The shipped Silero VAD graph (``models/silero-vad.md``), one thread, shared by threads."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or vad_model_path()
        self.session = _session(str(self.path))
        self.sha256 = _sha256(str(self.path))

    def stream(self) -> VadStream:
        """A fresh stream: feed it a recording's blocks in order."""
        return VadStream(self.session)

    def probabilities(self, signal: np.ndarray) -> np.ndarray:
        """Speech probability of every frame of a whole 16 kHz signal (last frame zero-padded)."""
        stream = self.stream()
        return np.concatenate([stream.feed(signal), stream.finish()])


class VadStream:
    """One recording's VAD state between blocks: LSTM state, context and partial frame."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._h = np.zeros(_STATE, np.float32)
        self._c = np.zeros(_STATE, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def feed(self, block: np.ndarray) -> np.ndarray:
        """Probabilities of the frames that ``block`` completes (a partial frame waits)."""
        samples = np.concatenate([self._pending, np.asarray(block, np.float32)])
        whole = samples.size // FRAME * FRAME
        self._pending = samples[whole:].copy()
        return self._run(samples[:whole])

    def finish(self) -> np.ndarray:
        """The probability of the last, zero-padded partial frame (none if there is none)."""
        if not self._pending.size:
            return np.zeros(0, np.float32)
        frame = np.zeros(FRAME, np.float32)
        frame[: self._pending.size] = self._pending
        self._pending = np.zeros(0, np.float32)
        return self._run(frame)

    def _run(self, samples: np.ndarray) -> np.ndarray:
        frames = samples.reshape(-1, FRAME)
        out = []
        for first in range(0, len(frames), MAX_FRAMES_PER_CALL):
            block = frames[first : first + MAX_FRAMES_PER_CALL]
            contexts = np.empty((len(block), CONTEXT), np.float32)
            contexts[0] = self._context
            contexts[1:] = block[:-1, -CONTEXT:]
            self._context = block[-1, -CONTEXT:].copy()
            probs, self._h, self._c = self._session.run(
                ["speech_probs", "hn", "cn"],
                {"input": np.concatenate([contexts, block], axis=1), "h": self._h, "c": self._c},
            )
            out.append(np.asarray(probs, np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, np.float32)


@functools.lru_cache(maxsize=4)
def _session(path: str) -> ort.InferenceSession:
    """One session per file for the whole process: ``run`` is safe from many threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors for bad files
        reason = " ".join(str(error).split())[:200]
        raise ModelError(f"{path}: not a loadable VAD model ({reason})") from None
    names = {item.name for item in session.get_inputs()}
    if names != {"input", "h", "c"}:
        raise ModelError(f"{path}: not Silero VAD's sequence graph (inputs {sorted(names)})")
    return session


@functools.lru_cache(maxsize=4)
def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
