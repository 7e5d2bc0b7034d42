"""Speaker normalisation of pooled encoder statistics, measured with a linear probe.

    python benchmarks/speaker_probe.py [--data RAVDESS_16K] [--backbone WHISPER_TINY] \
        [--views 4] [--augment/--no-augment] [--whisper-pad-30s]

Design input for speaker-adaptive scoring (issue 14): from the cached encoder states of the
shipped recipe (Whisper tiny.en, 4 s windows, 4 training views), each window's pooled
statistics (every layer's mean and standard deviation over its valid frames), then a logistic
regression trained on actors 1-20 and chosen (C) on actors 21-22, scored on actors 23-24:
plain (global standardisation), speaker mean removed, speaker mean and std; and how many of a
test speaker's clips its statistics need.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from ser.corpus import load_corpus, select
from ser.training.cache import default_cache_dir
from ser.training.neural import NeuralConfig, encode_corpus

from common import RAVDESS_16K, WHISPER_TINY, describe_machine

VARIANCE_FLOOR = 1e-8


class PooledStatistics(nn.Module):
    """``states [batch, layers, frames, hidden]``, ``valid [batch, frames]`` to
    ``[batch, 2 x layers x hidden]``: each layer's mean, then each layer's standard deviation."""

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weights = valid.to(states.dtype)[:, None, :, None]  # [b, 1, t, 1]
        count = weights.sum(dim=2).clamp(min=1.0)  # [b, 1, 1]
        mean = (states * weights).sum(dim=2) / count  # [b, layers, hidden]
        centred = (states - mean[:, :, None, :]) * weights
        std = torch.sqrt((centred**2).sum(dim=2) / count + VARIANCE_FLOOR)
        return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)


def pooled(states: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """``[clips, views, ...]`` to ``[clips x views, features]`` (float64), in chunks."""
    module, out = PooledStatistics(), []
    clips, views = states.shape[:2]
    flat_states = states.reshape(clips * views, *states.shape[2:])
    flat_valid = valid.reshape(clips * views, -1)
    for start in range(0, len(flat_states), 256):
        part = flat_states[start : start + 256].float()
        out.append(module(part, flat_valid[start : start + 256]).double().numpy())
    return np.concatenate(out)


def normalise(x: np.ndarray, speakers: np.ndarray, mode: str, rng=None, keep=None) -> np.ndarray:
    """Each speaker's rows standardised by that speaker's statistics (``keep``: of a random
    ``keep`` of its rows only)."""
    out = np.empty_like(x)
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        basis = rows if keep is None else rng.choice(rows, size=min(keep, rows.size), replace=False)
        mean = x[basis].mean(axis=0)
        std = np.maximum(x[basis].std(axis=0), 1e-5) if mode == "mean+std" else 1.0
        out[rows] = (x[rows] - mean) / std
    return out


@click.command()
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K)
@click.option("--backbone", default=str(WHISPER_TINY), show_default=True)
@click.option("--views", default=4, show_default=True, help="Training views per clip.")
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option("--whisper-pad-30s", is_flag=True, help="Encode each window padded to 30 s.")
def main(data: Path, backbone: str, views: int, augment: bool, whisper_pad_30s: bool) -> None:
    started = time.perf_counter()
    clips = load_corpus(data)
    config = NeuralConfig(
        backbone=backbone, views=views, augment=augment, whisper_pad_30s=whisper_pad_30s
    )
    encoded = encode_corpus(clips, default_cache_dir(), config)
    print(f"training views {views}, augmented {augment}, padded to 30 s {whisper_pad_30s}")
    part = encoded.parts[0]
    speakers = {
        split: np.array([c.speaker for c in select(clips, split)])
        for split in ("train", "validation", "test")
    }
    data_ = {}
    for split, enc in (("train", part.train), ("validation", part.validation), ("test", part.test)):
        views = enc.states.shape[1]
        data_[split] = (
            pooled(enc.states, enc.valid),
            np.repeat(enc.targets.numpy(), views),
            np.repeat(speakers[split], views),
        )
    print(f"features {data_['train'][0].shape[1]}, loaded in {time.perf_counter() - started:.0f} s")
    results = {}
    for mode in ("plain", "mean", "mean+std"):
        xs = {}
        for split, (x, _, spk) in data_.items():
            xs[split] = x if mode == "plain" else normalise(x, spk, mode)
        mu, sd = xs["train"].mean(axis=0), np.maximum(xs["train"].std(axis=0), 1e-8)
        xs = {k: (v - mu) / sd for k, v in xs.items()}
        best = None
        for c in (0.001, 0.01, 0.1):
            model = LogisticRegression(C=c, max_iter=2000).fit(xs["train"], data_["train"][1])
            val = float((model.predict(xs["validation"]) == data_["validation"][1]).mean())
            if best is None or val > best[0]:
                best = (val, c, model)
        val, c, model = best
        test = float((model.predict(xs["test"]) == data_["test"][1]).mean())
        results[mode] = (val, c, test, model, mu, sd)
        print(f"{mode:9s} C={c:<6} validation {val:.3f} test {test:.3f}", flush=True)
    for mode in ("mean", "mean+std"):
        _, c, _, model, mu, sd = results[mode]
        x, y, spk = data_["test"]
        for keep in (3, 5, 10, 20, 60):
            accs = []
            for seed in range(5):
                xn = (normalise(x, spk, mode, np.random.default_rng(seed), keep) - mu) / sd
                accs.append(float((model.predict(xn) == y).mean()))
            print(f"{mode:9s} test speaker statistics from {keep:2d} clips: "
                  f"{np.mean(accs):.3f} ± {np.std(accs):.3f} (5 draws)", flush=True)  # fmt: skip
    print(f"{describe_machine()}; {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
