"""One audio path: would trimming training crops to speech help ``--segmentation vad``?

    python benchmarks/trim_probe.py [--files 24] [--split validation]

Retraining the shipped heads per variant is hours on a shared 2-core machine, so this trains
linear probes instead, on the frozen Whisper tiny.en encoder that the shipped model uses: each
window is encoded once, pooled to the mean and standard deviation over its non-padding frames
of each of the encoder's hidden states (what the shipped pooled head sees), standardised, and
a logistic regression is fitted on the training actors 1-20, one probe per way of cutting the
training clips:

- ``whole``: each clip's centred 4 s window, as training evaluates (its ~1 s of near-silence
  around the speech included);
- ``trimmed``: each clip cut to its speech by the benchmark's energy rule, zero-padded.

Each probe is scored on the split's clips cut both ways, and on its long recordings
(``benchmarks/long_recordings.py``, with their background) through the VAD with each short
region scored alone (``--vad-context 0``, what a model trained on trimmed crops would be
given) and with 1 s of context (the default). Utterance accuracy as in ``vad_inputs.py``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from long_recordings import RATE, build, recording_options, trim_to_speech
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from vad_inputs import neighbour_bounds, region_input, region_labels_accuracy, vad_spans

sys.path.insert(0, str(Path(__file__).parent))
from ser.audio import center_window, load_audio
from ser.corpus import read_ravdess, select
from ser.training.backbones import load_backbone
from ser.training.heads import valid_frames
from ser.vad import SileroVad

from common import describe_machine

WINDOW = 4 * RATE


def pooled(states: torch.Tensor, frames: torch.Tensor) -> np.ndarray:
    """Each hidden state's mean and standard deviation over ``frames`` (what the shipped pooled
    head sees), per layer side by side; not speaker_probe's PooledStatistics, whose variance
    floor and layout would move these probes' published figures."""
    weights = frames.to(states.dtype)[:, None, :, None]
    count = weights.sum(dim=2).clamp(min=1)
    mean = (states * weights).sum(dim=2) / count
    var = ((states - mean[:, :, None]) ** 2 * weights).sum(dim=2) / count
    return torch.cat([mean, var.sqrt()], dim=2).flatten(1).numpy()


def probe_splits(data: Path, split: str) -> tuple[list, list]:
    """The training actors' clips and the evaluated split's, announced with the machine."""
    corpus = read_ravdess(data)
    train, evaluated = select(corpus, "train"), select(corpus, split)
    print(f"data: {data} train={len(train)} {split}={len(evaluated)}; {describe_machine()}")
    return train, evaluated


class Encoder:
    def __init__(self, backbone: str) -> None:
        self.model = load_backbone(backbone).eval()
        self.windows = 0

    def features(self, rows: list[np.ndarray]) -> np.ndarray:
        """Mean and standard deviation over the non-padding frames of every hidden state."""
        out = []
        for first in range(0, len(rows), 16):
            audio = torch.from_numpy(np.stack(rows[first : first + 16]).astype(np.float32))
            with torch.inference_mode():
                states = self.model(audio)  # [batch, layers, frames, hidden]
                mask = valid_frames(audio, self.model.samples_per_frame, states.shape[2])
                out.append(pooled(states, mask))
            self.windows += len(rows[first : first + 16])
        return np.concatenate(out)


@click.command()
@recording_options(split="validation", probe=True)
def main(data: Path, backbone: str, split: str, files: int, seed: int) -> None:
    torch.manual_seed(0)
    started = time.perf_counter()
    encoder = Encoder(backbone)
    train, evaluated = probe_splits(data, split)

    def cut(clips, trimmed: bool) -> np.ndarray:
        signals = [load_audio(clip.path) for clip in clips]
        if trimmed:
            signals = [trim_to_speech(signal) for signal in signals]
        return encoder.features([center_window(signal, WINDOW) for signal in signals])

    labels = sorted({clip.label for clip in train})
    y_train = np.array([labels.index(clip.label) for clip in train])
    y_eval = np.array([labels.index(clip.label) for clip in evaluated])
    probes = {}
    for name, trimmed in (("whole", False), ("trimmed", True)):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        probes[name] = probe.fit(cut(train, trimmed), y_train)
    clip_features = {name: cut(evaluated, name == "trimmed") for name in ("whole", "trimmed")}
    with tempfile.TemporaryDirectory(prefix="ser-probe-") as tmp:
        recordings = build(evaluated, files, seed, Path(tmp))
        vad = SileroVad()
        region_features: dict[float, list[np.ndarray]] = {0.0: [], 1.0: []}
        owners = []  # each recording's VAD spans
        for recording in recordings:
            signal = load_audio(Path(tmp) / recording.name)
            spans = vad_spans(signal, vad)
            bounds = neighbour_bounds(spans, signal.size)
            owners.append(spans)
            for margin in region_features:
                for span, bound in zip(spans, bounds, strict=True):
                    rows = region_input(signal, span, bound, margin, WINDOW, WINDOW, 6 * RATE)
                    region_features[margin].append(encoder.features(rows).mean(axis=0))
    print(
        f"{len(recordings)} recordings, {sum(len(r.utterances) for r in recordings)} "
        f"utterances, {sum(len(s) for s in owners)} VAD regions"
    )
    print(
        "| probe trained on | clips whole | clips trimmed | recordings, region alone | "
        "recordings, region + 1 s |"
    )
    print("|---|---|---|---|---|")
    for name, probe in probes.items():
        cells = [f"{(probe.predict(clip_features[k]) == y_eval).mean():.3f}" for k in clip_features]
        for features in region_features.values():
            predicted = [labels[int(k)] for k in probe.predict(np.stack(features))]
            cells.append(f"{region_labels_accuracy(recordings, owners, predicted):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    print(f"{encoder.windows} windows encoded, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
