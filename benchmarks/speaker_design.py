"""Where to normalise per speaker, judged on validation data only: two RAVDESS validation actors
(21-22) and nEMO's validation speaker (Polish, a corpus the heads never heard).

    python benchmarks/speaker_design.py --checkpoint runs/speaker [--nemo MANIFEST]

- ``states``: the checkpoint's speaker heads (``ser-train neural --normalize speaker``): each
  speaker's mean state taken away before the pooled head (through its linear bottleneck);
- ``pooled``: each window's pooled statistics (every layer's mean and standard deviation over
  its valid frames), minus the speaker's mean of them, into an MLP (3 seeds averaged, each at
  its best epoch on RAVDESS validation, as the heads are chosen);
- ``plain``: the checkpoint's plain heads.

Every split is centred by its own speakers' statistics, as ``--speaker-from folder`` does.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from speaker_probe import normalise, pooled

from ser.corpus import load_corpus, select
from ser.labels import LABELS
from ser.training.backbones import backbone_from_config
from ser.training.cache import ArrayCache, default_cache_dir
from ser.training.checkpoint import load_checkpoint
from ser.training.encoding import EncodedClips, encode_clips
from ser.training.speaker_norm import centre_by_speaker

from common import NEMO, RAVDESS_16K, describe_machine


def mlp_probs(train, validation, others, seeds=3, epochs=40) -> list[np.ndarray]:
    """Validation-chosen MLPs on standardised features; averaged probabilities on ``others``."""
    (x, y), (xv, yv) = train, validation
    mu, sd = x.mean(0), x.std(0) + 1e-6
    tensors = [torch.tensor((a - mu) / sd, dtype=torch.float32) for a in (x, xv, *others)]
    targets = torch.tensor(y)
    totals = [np.zeros((len(o), len(LABELS))) for o in others]
    for seed in range(seeds):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Dropout(0.2), nn.Linear(x.shape[1], 256), nn.ReLU(),
                            nn.Dropout(0.3), nn.Linear(256, len(LABELS)))  # fmt: skip
        optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
        best, kept = -1.0, None
        for _ in range(epochs):
            net.train()
            for batch in torch.randperm(len(x)).split(64):
                loss = nn.functional.cross_entropy(
                    net(tensors[0][batch]), targets[batch], label_smoothing=0.1
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            net.eval()
            with torch.no_grad():
                guess = net(tensors[1]).argmax(1).numpy()
                outputs = [net(t).softmax(1).numpy() for t in tensors[2:]]
            uar = np.mean([np.mean(guess[yv == c] == c) for c in np.unique(yv)])
            if uar > best:
                best, kept = uar, outputs
        totals = [t + k for t, k in zip(totals, kept, strict=True)]
    return [t / seeds for t in totals]


def head_probs(head: nn.Module, data: EncodedClips) -> np.ndarray:
    with torch.inference_mode():
        logits = [
            head(data.states[i : i + 64, 0].float(), data.valid[i : i + 64, 0])
            for i in range(0, len(data), 64)
        ]
    return torch.cat(logits).softmax(1).numpy()


def score(probs: np.ndarray, targets: np.ndarray) -> str:
    guess = probs.argmax(1)
    uar = np.mean([np.mean(guess[targets == c] == c) for c in np.unique(targets)])
    return f"accuracy={np.mean(guess == targets):.4f} UAR={uar:.4f}"


@click.command()
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--nemo", type=click.Path(path_type=Path), default=NEMO)
def main(checkpoint: Path, nemo: Path) -> None:
    started = time.perf_counter()
    trained = load_checkpoint(checkpoint)
    config = trained.config
    backbone = backbone_from_config(config)
    cache = ArrayCache(default_cache_dir(), "encoder-states")
    shared = dict(labels=LABELS, backbone=backbone, cache=cache, window=config["window"])
    ravdess = load_corpus(RAVDESS_16K)
    train = encode_clips(select(ravdess, "train"), views=config["views"], train=True,
                         seed=config["view_seed"], augmentation=_augmentation(config),
                         **shared)  # fmt: skip
    sets = {"RAVDESS validation (actors 21-22)": select(ravdess, "validation")}
    if nemo.is_file():
        sets["nEMO validation speaker"] = select(load_corpus(nemo), "validation")
    encoded = {name: encode_clips(clips, **shared) for name, clips in sets.items()}
    speakers = {name: np.array([c.speaker for c in clips]) for name, clips in sets.items()}
    views = train.states.shape[1]
    train_speakers = np.repeat(np.array(train.speakers), views)
    x = normalise(pooled(train.states, train.valid), train_speakers, "mean")
    y = np.repeat(train.targets.numpy(), views)
    names = list(sets)
    features = [
        normalise(pooled(encoded[n].states, encoded[n].valid), speakers[n], "mean") for n in names
    ]
    targets = {n: encoded[n].targets.numpy() for n in names}
    mlp = mlp_probs((x, y), (features[0], targets[names[0]]), features)
    print(f"machine: {describe_machine()}; checkpoint {checkpoint}")
    for name, pooled_probs in zip(names, mlp, strict=True):
        data = encoded[name]
        plain = head_probs(trained.head, data)
        centre_by_speaker(data, tuple(speakers[name]))
        states = head_probs(trained.speaker_head, data)
        print(f"{name}: {len(data)} clips")
        print(f"  plain heads                       {score(plain, targets[name])}")
        print(f"  speaker mean from pooled features {score(pooled_probs, targets[name])}")
        print(f"  speaker mean from states          {score(states, targets[name])}")
    print(f"total {time.perf_counter() - started:.0f} s")


def _augmentation(config: dict):
    from ser.training.augment import Augmentation

    return Augmentation() if config.get("augment", True) else None


if __name__ == "__main__":
    main()
