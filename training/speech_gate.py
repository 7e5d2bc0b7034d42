"""Fit the pooled head's speech gate: which encoder frames are speech, learned from Silero VAD.

The pooled head averages over every frame of its window. A background under the pauses moves
those averages even where the speech itself is untouched, so ``ser-train neural --pool speech``
pools over the speech frames only. Which frames are speech is a linear rule on the frozen
encoder's states, fitted here against Silero VAD's frame decisions on training crops, half of
them with a room background added (so noise alone is learned as not speech). The rule then
lives in the head (:class:`ser.training.heads.SpeechGate`): the exported graph still takes the
waveform alone, and ``windows`` and ``vad`` scoring both get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ser.audio import load_audio
from ser.corpus import Clip
from ser.errors import CorpusError
from ser.training.augment import Augmentation, random_crop, room_background
from ser.training.backbones import SpeechEncoder
from ser.training.devices import encoder_arithmetic
from ser.training.heads import valid_frames
from ser.training.progress import Stage
from ser.vad import FRAME, THRESHOLD, SileroVad

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

FRAMES_PER_WINDOW = 24
"""Frames drawn from each window: enough for a linear rule, few enough to fit in seconds."""


@dataclass(frozen=True)
class FittedGate:
    """``score = sum(states * weight) + bias`` over ``[layers, hidden]``; speech where > 0."""

    weight: torch.Tensor
    bias: torch.Tensor
    report: dict


def speech_marks(signal: np.ndarray, vad: SileroVad) -> np.ndarray:
    """Per sample: 1 where Silero's probability for its 32 ms frame reaches the threshold."""
    probs = vad.probabilities(signal)
    marks = np.repeat((probs >= THRESHOLD).astype(np.float32), FRAME)[: signal.size]
    return np.pad(marks, (0, signal.size - marks.size))


def frame_marks(marks: torch.Tensor, samples_per_frame: int, frames: int) -> torch.Tensor:
    """``[batch, frames]``: True where at least half of an encoder frame's samples are speech."""
    share = torch.nn.functional.avg_pool1d(
        marks[:, None, :], kernel_size=samples_per_frame, stride=samples_per_frame, ceil_mode=True
    )
    return share[:, 0, :frames] >= 0.5


def gate_regression() -> Pipeline:
    """Standardised L2 logistic regression from a frame's states to its speech mark."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))


def linear_rule(fitted: Pipeline) -> tuple[np.ndarray, float]:
    """A fitted :func:`gate_regression` as weights and bias on the raw states themselves
    (its standardisation folded in), so the head needs no scaler."""
    scaler, logistic = fitted[0], fitted[1]
    weight = logistic.coef_[0] / scaler.scale_
    return weight, float(logistic.intercept_[0] - float((scaler.mean_ * weight).sum()))


def _crop(clip: Clip, window: int, rng: np.random.Generator) -> np.ndarray:
    """A random training crop, in a room background half of the time."""
    crop = random_crop(load_audio(clip.path), window, rng)
    if rng.random() < 0.5:
        crop = crop + room_background(crop, rng, Augmentation.background_snr_db)
    return crop.astype(np.float32)


def _marked_frames(
    states: torch.Tensor, audio: torch.Tensor, vad: SileroVad, samples_per_frame: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Up to ``FRAMES_PER_WINDOW`` valid frames of each crop: their states and speech marks."""
    marks = torch.from_numpy(np.stack([speech_marks(crop, vad) for crop in audio.numpy()]))
    frames = states.shape[2]
    valid = valid_frames(audio, samples_per_frame, frames)
    speech = frame_marks(marks, samples_per_frame, frames)
    pairs = sample_frames(states, valid, speech, rng)
    return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])


def sample_frames(
    states: torch.Tensor, valid: torch.Tensor, speech: torch.Tensor, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each window, up to ``FRAMES_PER_WINDOW`` of its valid frames drawn at random: their
    states (layers side by side) and their speech marks."""
    flat = states.transpose(1, 2).flatten(2)  # [batch, frames, layers x hidden]
    pairs = []
    for row in range(flat.shape[0]):
        picks = np.flatnonzero(valid[row].numpy())
        picks = rng.choice(picks, min(FRAMES_PER_WINDOW, picks.size), replace=False)
        pairs.append((flat[row, picks].numpy(), speech[row, picks].numpy()))
    return pairs


def fit_speech_gate(
    backbone: SpeechEncoder,
    clips: Sequence[Clip],
    window: int,
    *,
    seed: int = 0,
    windows: int = 256,
    device: torch.device | None = None,
    precision: str = "fp32",
    batch_size: int = 16,
) -> FittedGate:
    """Encode ``windows`` random training crops (half in a room background), mark each frame
    with the VAD, and fit a logistic regression from the states to the marks. The report's
    ``frame_accuracy`` is measured on a random fifth of the frames, left out of a first fit.

    Raises:
        CorpusError: when the VAD finds no speech, or nothing but speech, in the crops.
    """
    device = device or torch.device("cpu")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(clips), size=min(windows, len(clips)), replace=False)
    vad = SileroVad()
    features, targets = [], []
    detail = "training crops, half in a room background, marked by Silero VAD"
    with Stage("fitting the speech gate", int(chosen.size), "window", detail=detail) as bar:
        for first in range(0, chosen.size, batch_size):
            audio = torch.from_numpy(
                np.stack(
                    [_crop(clips[int(i)], window, rng) for i in chosen[first : first + batch_size]]
                )
            )
            with torch.inference_mode(), encoder_arithmetic(device, precision):
                states = backbone(audio.to(device)).float().cpu()
            x, y = _marked_frames(states, audio, vad, backbone.samples_per_frame, rng)
            features.append(x)
            targets.append(y)
            bar.update(audio.shape[0])
    x, y = np.concatenate(features), np.concatenate(targets)
    if y.all() or not y.any():
        raise CorpusError(
            "--pool speech: Silero VAD found "
            + ("only speech" if y.all() else "no speech")
            + f" in {chosen.size} training crops, so there is nothing to learn the gate from"
        )

    order = rng.permutation(y.size)
    fit_part, held_part = order[y.size // 5 :], order[: y.size // 5]
    if np.unique(y[fit_part]).size < 2 or held_part.size == 0:
        raise CorpusError(
            f"--pool speech: too few {'non-speech' if y.mean() > 0.5 else 'speech'} frames "
            f"({int(min(y.sum(), y.size - y.sum()))} of {y.size}) in {chosen.size} training "
            "crops to fit and check the gate"
        )
    held_out = float(
        gate_regression().fit(x[fit_part], y[fit_part]).score(x[held_part], y[held_part])
    )
    weight, bias = linear_rule(gate_regression().fit(x, y))
    shape = (backbone.num_layers, backbone.hidden_size)
    report = {
        "windows": int(chosen.size),
        "frames": int(y.size),
        "speech_share": round(float(y.mean()), 4),
        "frame_accuracy": round(held_out, 4),  # on frames left out of a first fit
        "held_out_frames": int(held_part.size),
    }
    return FittedGate(
        torch.from_numpy(weight.reshape(shape)).float(), torch.tensor([bias]).float(), report
    )
