"""Would pooling over the speech frames only make the head robust to the background?

    python benchmarks/speech_pooling_probe.py [--files 24] [--split validation]

The shipped heads pool the mean and standard deviation over every frame that is not zero
padding, so a background under the pauses of a window moves the pooled statistics even where
the speech is untouched. This probe measures, with linear probes on the frozen Whisper tiny.en
encoder (as ``trim_probe.py``), pooling over all valid frames against pooling over the frames
the Silero VAD marks as speech (the encoder still sees the whole window). Each probe is trained
on the training actors' clean clips (its own pooling) and scored on the split's clips clean,
with the benchmark's white noise, with its room tone, and on its long recordings through the
VAD (each region with 1 s of context, as ``--segmentation vad`` scores it).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from long_recordings import RATE, background, build, recording_options
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from trim_probe import pooled, probe_splits
from vad_inputs import neighbour_bounds, region_input, region_labels_accuracy, vad_spans

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import center_window, load_audio
from ser.training.augment import room_background
from ser.training.backbones import load_backbone
from ser.training.heads import SpeechGate, valid_frames
from ser.training.speech_gate import frame_marks, gate_regression, linear_rule, sample_frames
from ser.vad import SileroVad

WINDOW = 4 * RATE
POOLINGS = ("all", "speech", "gate")


class Encoder:
    def __init__(self, backbone: str) -> None:
        self.model = load_backbone(backbone).eval()
        self.windows = 0
        self.gate: SpeechGate | None = None  # the head's own gate, once fitted
        self.frames: list[tuple[np.ndarray, np.ndarray]] = []  # (states, speech) samples

    def fit_gate(self) -> float:
        """The product's gate regression, from a frame's states to the VAD's speech mark."""
        x = np.concatenate([f for f, _ in self.frames])
        y = np.concatenate([m for _, m in self.frames])
        fitted = gate_regression().fit(x, y)
        self.gate = SpeechGate(self.model.num_layers, self.model.hidden_size)
        self.gate.set_rule(*linear_rule(fitted))
        self.frames = []
        return float(fitted.score(x, y))

    def features(self, rows: list[np.ndarray], speech: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Both poolings of every hidden state; ``speech``: per-sample 0/1 beside each row."""
        out: dict[str, list[np.ndarray]] = {name: [] for name in POOLINGS}
        step = self.model.samples_per_frame
        for first in range(0, len(rows), 16):
            audio = torch.from_numpy(np.stack(rows[first : first + 16]).astype(np.float32))
            marks = torch.from_numpy(np.stack(speech[first : first + 16]).astype(np.float32))
            with torch.inference_mode():
                states = self.model(audio)
                frames = states.shape[2]
                valid = valid_frames(audio, step, frames)
                spoken = valid & frame_marks(marks, step, frames)
                spoken = torch.where(spoken.any(dim=1, keepdim=True), spoken, valid)
                out["all"].append(pooled(states, valid))
                out["speech"].append(pooled(states, spoken))
                if self.gate is None:
                    rng = np.random.default_rng(self.windows)
                    self.frames += sample_frames(states, valid, spoken, rng)
                    out["gate"].append(pooled(states, valid))
                else:
                    out["gate"].append(pooled(states, self.gate(states, valid)))
            self.windows += audio.shape[0]
        return {name: np.concatenate(parts) for name, parts in out.items()}


def marks_of(signal: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    marks = np.zeros(signal.size, np.float32)
    for start, end in spans:
        marks[start:end] = 1
    return marks


@click.command()
@recording_options(split="validation", probe=True)
def main(data: Path, backbone: str, split: str, files: int, seed: int) -> None:
    torch.manual_seed(0)
    started = time.perf_counter()
    encoder, vad = Encoder(backbone), SileroVad()
    train, evaluated = probe_splits(data, split)
    rng = np.random.default_rng(seed)

    def clips(chosen, kind: str | None) -> dict[str, np.ndarray]:
        rows, speech = [], []
        for clip in chosen:
            signal = load_audio(clip.path)
            if kind == "augmented":  # training's own backgrounds, on half of the clips
                if rng.random() < 0.5:
                    signal = signal + room_background(signal, rng, (5.0, 35.0))
            elif kind:
                signal = signal + background(signal.size, kind, rng)
            rows.append(center_window(signal, WINDOW))
            speech.append(center_window(marks_of(signal, vad_spans(signal, vad)), WINDOW))
        return encoder.features(rows, speech)

    labels = sorted({clip.label for clip in train})
    y_train = np.array([labels.index(clip.label) for clip in train])
    y_eval = np.array([labels.index(clip.label) for clip in evaluated])
    clips(train, "augmented")  # frames for the gate
    print(f"gate: frame accuracy on its training frames {encoder.fit_gate():.3f}")
    train_features = clips(train, None)
    probes = {
        name: make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000)).fit(
            train_features[name], y_train
        )
        for name in POOLINGS
    }
    columns = {kind or "clean": clips(evaluated, kind) for kind in (None, "noise", "room")}
    with tempfile.TemporaryDirectory(prefix="ser-probe-") as tmp:
        recordings = build(evaluated, files, seed, Path(tmp))
        regions: dict[str, list[np.ndarray]] = {name: [] for name in POOLINGS}
        owners = []
        for recording in recordings:
            signal = load_audio(Path(tmp) / recording.name)
            spans = vad_spans(signal, vad)
            owners.append(spans)
            marks = marks_of(signal, spans)
            for span, bound in zip(spans, neighbour_bounds(spans, signal.size), strict=True):
                rows = region_input(signal, span, bound, 1.0, WINDOW, WINDOW, 6 * RATE)
                speech = region_input(marks, span, bound, 1.0, WINDOW, WINDOW, 6 * RATE)
                features = encoder.features(rows, speech)
                for name in POOLINGS:
                    regions[name].append(features[name].mean(axis=0))
    print(
        f"{len(recordings)} recordings, {sum(len(r.utterances) for r in recordings)} "
        f"utterances, {sum(len(s) for s in owners)} VAD regions"
    )
    print("| pooling | clips clean | clips + white noise | clips + room tone | recordings, vad |")
    print("|---|---|---|---|---|")
    for name, probe in probes.items():
        cells = [f"{(probe.predict(c[name]) == y_eval).mean():.3f}" for c in columns.values()]
        predicted = [labels[int(k)] for k in probe.predict(np.stack(regions[name]))]
        cells.append(f"{region_labels_accuracy(recordings, owners, predicted):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"{encoder.windows} windows encoded, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
