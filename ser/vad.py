"""Voice activity detection: Silero VAD's speech probability for every 32 ms frame.

The graph is recurrent: a frame's probability depends on the frames before it through an
LSTM state, and each frame is fed with the last 64 samples of the one before. A
:class:`VadStream` carries that state, that context and any partial frame from one block of
audio to the next, so a recording fed in blocks of any size gives the same probabilities, bit
for bit, as fed whole: a long file runs in flat memory. numpy and ONNX Runtime only, no torch.

Carried through a long stream, that state drifts and the graph's confidence in clear speech
falls (silero-vad issue #725); on ser's long recordings it misses mostly fear or anger at full
intensity and very quiet speech (README "Segmentation"). With ``refresh_frames`` the
stream runs two lanes of state, each restarted every ``refresh_frames`` frames, the second half a
period after the first, and a frame's probability is the higher of the two: neither lane's
state is ever older than one period, and at any frame one of them has run for at least
``refresh_frames // 2`` frames once the first half period has passed. The restarts fall on
absolute frame numbers, so blocks of any size still give the same probabilities. The second
lane starts at its first restart (before it, it would repeat the first), and an odd period puts
the lanes ``refresh_frames // 2`` frames apart.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.errors import ModelError
from ser.models import vad_model_path

THRESHOLD = 0.5
"""Silero's own speech threshold: ``--vad-threshold``'s default and the speech gate's marks."""
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

    def stream(self, refresh_frames: int = 0) -> VadStream:
        """A fresh stream: feed it a recording's blocks in order (``refresh_frames``: see the
        module's docstring; 0 carries one state through the whole recording, Silero's use)."""
        return VadStream(self.session, refresh_frames)

    def probabilities(self, signal: np.ndarray, refresh_frames: int = 0) -> np.ndarray:
        """Speech probability of every frame of a whole 16 kHz signal (last frame zero-padded)."""
        stream = self.stream(refresh_frames)
        return np.concatenate([stream.feed(signal), stream.finish()])


class VadStream:
    """One recording's VAD state between blocks: LSTM state, context and partial frame."""

    def __init__(self, session: ort.InferenceSession, refresh_frames: int = 0) -> None:
        if refresh_frames and refresh_frames < 2:
            raise ValueError(f"VAD refresh must be 0 or at least 2 frames, got {refresh_frames}")
        self._session = session
        self._period = refresh_frames
        offsets = (0, refresh_frames // 2) if refresh_frames else (0,)
        self._lanes = [_Lane(offset) for offset in offsets]
        self._frame = 0  # frames run so far
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
            inputs = np.empty((len(block), CONTEXT + FRAME), np.float32)
            inputs[0, :CONTEXT] = self._context
            inputs[1:, :CONTEXT] = block[:-1, -CONTEXT:]
            inputs[:, CONTEXT:] = block
            self._context = block[-1, -CONTEXT:].copy()
            probs = np.zeros(len(block), np.float32)
            for lane in self._lanes:
                probs = np.maximum(probs, self._run_lane(lane, inputs))
            self._frame += len(block)
            out.append(probs)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _run_lane(self, lane: _Lane, inputs: np.ndarray) -> np.ndarray:
        """One lane's probabilities for ``inputs`` (frames from ``self._frame`` on), its state
        restarted on its period; zeros before a late lane's first restart, where it would only
        repeat the first lane."""
        probs = np.zeros(len(inputs), np.float32)
        first = max(0, lane.offset - self._frame)
        while first < len(inputs):
            last = len(inputs)
            if self._period:
                frame = self._frame + first
                since = (frame - lane.offset) % self._period
                if since == 0 and frame > 0:
                    lane.restart()
                last = min(last, first + self._period - since)
            feeds = {"input": inputs[first:last], "h": lane.h, "c": lane.c}
            out, lane.h, lane.c = self._session.run(["speech_probs", "hn", "cn"], feeds)
            probs[first:last] = np.asarray(out, np.float32).reshape(-1)
            first = last
        return probs


class _Lane:
    """One recurrent state of a stream, restarted every period counted from ``offset``."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.restart()

    def restart(self) -> None:
        self.h = np.zeros(_STATE, np.float32)
        self.c = np.zeros(_STATE, np.float32)


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
