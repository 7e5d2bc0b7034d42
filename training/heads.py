"""Classification heads over frozen encoder states ``[batch, layers, frames, hidden]``.

- ``reference``: the reference study's head. The frames of a fixed window are the *channels* of a
  pointwise ``Conv1d(frames, 256, 1)``, so it only works for that window length.
- ``pooled``: length-agnostic. Pointwise convolutions per frame, then mean and standard
  deviation over the valid frames (padding excluded), then a small MLP. With a
  :class:`SpeechGate` (``--pool speech``) it pools over the valid frames the gate calls speech.

Both start by standardising the states with training statistics, then mix the layers: the last
layer alone, or a learned softmax-weighted sum of all layers (Pepino et al. 2021). Several heads
trained with different seeds can be averaged as one :class:`HeadEnsemble`. The ``pooled`` head can
first normalise each recording on its own (:class:`RecordingNorm`), which needs no speaker
labels at scoring time and is part of the exported graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    import numpy as np

HEADS = ("pooled", "reference")
LAYER_MODES = ("weighted", "last")
RECORDING_NORMS = ("none", "mean", "standardize")


class Standardize(nn.Module):
    """Per layer and channel standardisation with statistics of the training states.

    Encoders differ wildly in the scale of their states, and in some the emotion lives in small
    offsets on large shared components; standardising first lets one recipe fit them all. The
    statistics are buffers: saved with the head and exported with it.
    """

    def __init__(self, num_layers: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_layers, 1, hidden))
        self.register_buffer("scale", torch.ones(num_layers, 1, hidden))

    @torch.no_grad()
    def fit(self, states: torch.Tensor) -> None:
        """Fit to training states ``[n, layers, frames, hidden]``."""
        flat = states.float().transpose(0, 1).reshape(states.shape[1], -1, states.shape[-1])
        self.mean.copy_(flat.mean(dim=1, keepdim=True))
        self.scale.copy_(flat.std(dim=1, keepdim=True).clamp(min=1e-5))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.mean) / self.scale


class RecordingNorm(nn.Module):
    """Per-recording normalisation of the states over the window's valid frames.

    ``mean`` subtracts each recording's mean per layer and channel (the offsets a speaker or a
    microphone adds to every frame); ``standardize`` also divides by its standard deviation;
    ``none`` passes the states through. Statistics come from the window itself, so the graph
    needs nothing but the audio, and each row of a batch is normalised alone.
    """

    def __init__(self, mode: str = "none") -> None:
        super().__init__()
        if mode not in RECORDING_NORMS:
            raise ValueError(
                f"unknown recording norm {mode!r}; expected {', '.join(RECORDING_NORMS)}"
            )
        self.mode = mode

    def forward(self, states: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "none":
            return states
        if valid is None:
            valid = torch.ones(states.shape[0], states.shape[2], dtype=torch.bool)
        weights = valid.to(states.dtype).to(states.device)[:, None, :, None]
        count = weights.sum(dim=2, keepdim=True).clamp(min=1.0)
        mean = (states * weights).sum(dim=2, keepdim=True) / count
        centred = states - mean
        if self.mode == "mean":
            return centred
        var = (centred**2 * weights).sum(dim=2, keepdim=True) / count
        return centred / torch.sqrt(var + 1e-5)


class SpeechGate(nn.Module):
    """Which frames are speech: a linear rule on the raw states, fitted against Silero VAD.

    ``forward`` narrows a valid-frame mask to the frames scored as speech; a window with no
    such frame keeps its valid frames (never an empty pool). The weights are buffers fitted by
    :func:`ser.training.speech_gate.fit_speech_gate`, not trained with the head.
    """

    def __init__(self, num_layers: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_layers, hidden))
        self.register_buffer("bias", torch.zeros(1))

    def set_rule(self, weight: np.ndarray | torch.Tensor, bias: float | torch.Tensor) -> None:
        """Take a fitted linear rule (:func:`ser.training.speech_gate.linear_rule`): ``weight``
        holds layers x hidden numbers in any shape, layer by layer."""
        with torch.no_grad():
            self.weight.copy_(torch.as_tensor(weight).reshape(self.weight.shape))
            self.bias.copy_(torch.as_tensor(bias).reshape(1))

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        score = torch.einsum("blth,lh->bt", states, self.weight) + self.bias
        speech = valid & (score > 0)
        return speech | (valid & ~speech.any(dim=1, keepdim=True))  # ORT has no bool Where


class LayerMix(nn.Module):
    """``[batch, layers, frames, hidden] -> [batch, frames, hidden]``."""

    def __init__(self, num_layers: int, mode: str) -> None:
        super().__init__()
        if mode not in LAYER_MODES:
            raise ValueError(f"unknown layer mode {mode!r}; expected {', '.join(LAYER_MODES)}")
        self.mode = mode
        self.weights = nn.Parameter(torch.zeros(num_layers)) if mode == "weighted" else None

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if self.weights is None:
            return states[:, -1]
        return torch.einsum("blth,l->bth", states, torch.softmax(self.weights, dim=0))


class ReferenceHead(nn.Module):
    """Frames as channels: Conv1d(frames, 256, 1), Conv1d(256, 1, 1), then a 2-layer MLP."""

    def __init__(
        self, num_layers: int, frames: int, hidden: int, classes: int, layers: str = "weighted"
    ) -> None:
        super().__init__()
        self.frames = frames
        self.standardize = Standardize(num_layers, hidden)
        self.mix = LayerMix(num_layers, layers)
        self.frame_conv = nn.Sequential(
            nn.Conv1d(frames, 256, 1), nn.ReLU(), nn.Dropout(0.5), nn.Conv1d(256, 1, 1)
        )
        self.classifier = nn.Sequential(
            nn.Linear(hidden, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, classes)
        )

    def forward(self, states: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        del valid  # the frame count is fixed: padding is part of the window
        mixed = self.mix(self.standardize(states))  # [batch, frames, hidden]: frames as channels
        return self.classifier(self.frame_conv(mixed).squeeze(1))


class PooledHead(nn.Module):
    """Pointwise convolutions, mean+std pooling over valid frames, MLP: any number of frames."""

    def __init__(
        self,
        num_layers: int,
        hidden: int,
        classes: int,
        layers: str = "weighted",
        width: int = 256,
        dropout: float = 0.3,
        frame_dropout: float = 0.0,
        recording_norm: str = "none",
        bottleneck: int | None = None,
        speech_gate: bool = False,
    ) -> None:
        super().__init__()
        self.frame_dropout = frame_dropout
        self.gate = SpeechGate(num_layers, hidden) if speech_gate else None
        self.recording = RecordingNorm(recording_norm)
        self.standardize = Standardize(num_layers, hidden)
        self.mix = LayerMix(num_layers, layers)
        self.project = nn.Linear(hidden, bottleneck) if bottleneck else None
        frame_dim = bottleneck or hidden
        self.norm = nn.LayerNorm(frame_dim)
        self.frame_net = nn.Sequential(
            nn.Conv1d(frame_dim, width, 1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(width, width, 1),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * width, width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, classes),
        )  # fmt: skip

    def forward(self, states: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if self.gate is not None:  # pool (and normalise) over the speech frames only
            if valid is None:
                valid = torch.ones(states.shape[0], states.shape[2], dtype=torch.bool)
            valid = self.gate(states, valid.to(states.device))
        return self.classify_frames(self.frame_features(states, valid), valid)

    def frame_features(
        self, states: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[batch, frames, dim]``: the states up to the bottleneck, before any non-linearity.

        With a bottleneck (and no recording norm) this is affine in the states, so subtracting
        a speaker's mean here equals subtracting it from the states first: what speaker mode
        caches per item (``dim`` numbers a frame instead of ``layers x hidden``).
        """
        mixed = self.mix(self.standardize(self.recording(states, valid)))
        return self.project(mixed) if self.project is not None else mixed

    def classify_frames(self, features: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Logits from :meth:`frame_features` (or a speaker-centred copy of them)."""
        frames = self.frame_net(self.norm(features).transpose(1, 2))  # [b, width, t]
        if valid is None:
            valid = torch.ones(
                frames.shape[0], frames.shape[2], dtype=torch.bool, device=frames.device
            )
        if self.training and self.frame_dropout > 0:  # pool over a random subset of frames
            kept = torch.rand(valid.shape, device=valid.device) >= self.frame_dropout
            valid = valid & (kept | ~(valid & kept).any(dim=1, keepdim=True))
        weights = valid.to(frames.dtype)[:, None, :]
        count = weights.sum(dim=2).clamp(min=1.0)
        mean = (frames * weights).sum(dim=2) / count
        var = (((frames - mean[:, :, None]) ** 2) * weights).sum(dim=2) / count
        return self.classifier(torch.cat([mean, torch.sqrt(var + 1e-6)], dim=1))


class HeadEnsemble(nn.Module):
    """Heads trained apart on the same states; their class probabilities are averaged.

    ``forward`` returns the log of the mean probability, so that a softmax over its output (what
    the exported graph applies to any head) gives exactly the members' mean probabilities.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, states: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        logs = torch.stack([torch.log_softmax(m(states, valid), dim=-1) for m in self.members])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.members))


def build_head(
    kind: str,
    *,
    num_layers: int,
    frames: int,
    hidden: int,
    classes: int,
    layers: str,
    dropout: float = 0.3,
    frame_dropout: float = 0.0,
    ensemble: int = 1,
    recording_norm: str = "none",
    bottleneck: int | None = None,
    speech_gate: bool = False,
) -> nn.Module:
    """A head by name; the dropouts apply to ``pooled`` (``reference`` keeps the study's 0.5).

    ``recording_norm`` (see :class:`RecordingNorm`), ``bottleneck`` (a linear projection of
    the mixed states to that many channels, what speaker mode normalises) and ``speech_gate``
    (pool over the speech frames only, see :class:`SpeechGate`) are for ``pooled`` only.

    ``ensemble`` above 1 gives a :class:`HeadEnsemble` of that many untrained heads (the form a
    checkpoint is loaded into; training fits each member on its own).
    """
    if ensemble > 1:
        member = partial(
            build_head, kind, num_layers=num_layers, frames=frames, hidden=hidden,
            classes=classes, layers=layers, dropout=dropout, frame_dropout=frame_dropout,
            recording_norm=recording_norm, bottleneck=bottleneck, speech_gate=speech_gate,
        )  # fmt: skip
        return HeadEnsemble([member() for _ in range(ensemble)])
    if kind == "reference":
        if recording_norm != "none" or bottleneck or speech_gate:
            raise ValueError("recording norms, bottlenecks and speech gates need the pooled head")
        return ReferenceHead(num_layers, frames, hidden, classes, layers)
    if kind == "pooled":
        return PooledHead(
            num_layers, hidden, classes, layers, dropout=dropout, frame_dropout=frame_dropout,
            recording_norm=recording_norm, bottleneck=bottleneck, speech_gate=speech_gate,
        )  # fmt: skip
    raise ValueError(f"unknown head {kind!r}; expected {', '.join(HEADS)}")


def valid_frames(audio: torch.Tensor, samples_per_frame: int, frames: int) -> torch.Tensor:
    """``[batch, frames]``: True where a frame covers any non-zero sample (not zero padding).

    Computed from the waveform alone, so the exported graph needs no length input; a window that
    is all zeros keeps every frame. A max-pool with ``ceil_mode`` counts a last partial frame and
    traces to ONNX for any input length.
    """
    nonzero = (audio != 0).to(audio.dtype)[:, None, :]
    pooled = nn.functional.max_pool1d(
        nonzero, kernel_size=samples_per_frame, stride=samples_per_frame, ceil_mode=True
    )
    mask = pooled[:, 0, :frames] > 0
    return mask | ~mask.any(dim=1, keepdim=True)
