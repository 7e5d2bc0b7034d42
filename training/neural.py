"""Train a classification head on a frozen speech encoder (``ser-train neural``).

The recipe: 4 s windows (random crops in training, centred and zero-padded in evaluation),
noise and time-stretch augmentation, class-balanced sampling with replacement (an epoch draws
1.5 x the largest class count x the number of classes), AdamW with a one-cycle schedule and
label smoothing, and the epoch with the best validation accuracy kept. The encoder runs once per
clip and view; the head trains on the cache. ``seed`` drives the head's initialisation, sampling
and dropout; the training views are drawn with ``view_seed``, so they are encoded only once.
``ensemble`` N trains N heads (seeds ``seed`` to ``seed + N - 1``) on the same cache and averages
their probabilities: the encoder, which costs nearly all of the inference, still runs once.

``device`` (``auto``: CUDA when PyTorch sees a GPU) runs both the encoder and the head there;
``precision`` picks the encoder's arithmetic (see :mod:`ser.training.devices`). On CUDA the
seeds still fix the data order and the initialisation, but GPU kernels round differently from
the CPU's, so a CUDA run reproduces a CPU run's accuracy within noise, not to the last digit.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import transformers
from torch import nn

from ser.audio import SAMPLE_RATE, center_window, load_audio
from ser.corpus import SPLITS, Clip, check_splits, manifest_hash, select
from ser.labels import LABELS
from ser.training.augment import Augmentation
from ser.training.backbones import DEFAULT_BACKBONE, SpeechEncoder, load_backbone
from ser.training.cache import ArrayCache
from ser.training.checkpoint import save_checkpoint
from ser.training.checks import check_readable
from ser.training.devices import (
    PrecisionChoice,
    choose_precision,
    describe_device,
    encoder_arithmetic,
    resolve_device,
    synchronize,
)
from ser.training.encoding import EncodedClips, encode_clips, window_bytes
from ser.training.heads import HeadEnsemble, build_head
from ser.training.metrics import classification_metrics
from ser.training.plots import plot_confusion_matrix, plot_training_curves
from ser.training.progress import announce_encoding, track


@dataclass(frozen=True)
class NeuralConfig:
    backbone: str = DEFAULT_BACKBONE
    head: str = "pooled"
    layers: str = "weighted"
    window_s: float = 4.0
    views: int = 4
    augment: bool = True
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    dropout: float = 0.3
    frame_dropout: float = 0.3
    seed: int = 0
    ensemble: int = 1
    view_seed: int = 0
    whisper_pad_30s: bool = False
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None


@dataclass(frozen=True)
class NeuralRun:
    out_dir: Path
    metrics: dict
    history: dict


@dataclass(frozen=True)
class EncodedCorpus:
    """A corpus run through the frozen encoder: what head training needs, nothing more."""

    backbone: SpeechEncoder
    window: int
    train: EncodedClips
    validation: EncodedClips
    test: EncodedClips | None
    manifest_hash: str
    encode_s: float
    device: torch.device
    precision: PrecisionChoice
    workers: int


PROBE_CLIPS = 16
ENCODER_BATCH = {"cpu": 16, "cuda": 64}


def encode_corpus(
    clips: Sequence[Clip],
    cache_dir: Path,
    config: NeuralConfig,
    backbone: SpeechEncoder | None = None,
) -> EncodedCorpus:
    """Check the corpus, load the backbone, and encode every split (from the cache if present).

    Raises:
        CorpusError, ModelError: before any encoding, for a bad corpus or backbone.
        DeviceError: for ``--device cuda`` where PyTorch sees no GPU.
    """
    device = resolve_device(config.device)
    check_splits(clips, ("train", "validation"), LABELS)
    check_readable(clips)
    backbone = backbone or load_backbone(config.backbone, whisper_pad_30s=config.whisper_pad_30s)
    backbone.to(device)
    window = round(config.window_s * SAMPLE_RATE)
    workers = config.workers or (min(8, os.cpu_count() or 1) if device.type == "cuda" else 1)
    started = time.perf_counter()
    precision = _choose_precision(backbone, select(clips, "validation"), window, device, config)
    cache = ArrayCache(cache_dir, "encoder-states")
    splits = {split: len(select(clips, split)) for split in SPLITS if select(clips, split)}
    announce_encoding(
        splits, views=config.views, window_bytes=window_bytes(backbone, window), folder=cache.folder
    )
    shared = dict(
        backbone=backbone, cache=cache, window=window, labels=LABELS, device=device,
        precision=precision.precision, workers=workers, batch_size=ENCODER_BATCH[device.type],
    )  # fmt: skip
    train = encode_clips(
        select(clips, "train"), views=config.views, seed=config.view_seed, train=True,
        augmentation=Augmentation() if config.augment else None, desc="encoding train", **shared,
    )  # fmt: skip
    validation = encode_clips(select(clips, "validation"), desc="encoding validation", **shared)
    test_clips = select(clips, "test")
    test = encode_clips(test_clips, desc="encoding test", **shared) if test_clips else None
    elapsed = time.perf_counter() - started
    return EncodedCorpus(
        backbone, window, train, validation, test, manifest_hash(clips), elapsed, device,
        precision, workers,
    )  # fmt: skip


def _choose_precision(
    backbone: SpeechEncoder,
    validation: Sequence[Clip],
    window: int,
    device: torch.device,
    config: NeuralConfig,
) -> PrecisionChoice:
    """``config.precision`` resolved on a probe batch: the first validation clips, centred."""
    probe_clips = validation[:PROBE_CLIPS]

    def encode(precision: str) -> torch.Tensor:
        audio = torch.from_numpy(
            np.stack([center_window(load_audio(clip.path), window) for clip in probe_clips])
        )
        with torch.inference_mode(), encoder_arithmetic(device, precision):
            return backbone(audio.to(device)).float().cpu()

    return choose_precision(config.precision, device, encode)


def train_neural(
    clips: Sequence[Clip],
    out_dir: Path,
    cache_dir: Path,
    config: NeuralConfig,
    *,
    backbone: SpeechEncoder | None = None,
) -> NeuralRun:
    """Encode, train, select the best epoch on validation, evaluate, write the checkpoint."""
    return train_head(encode_corpus(clips, cache_dir, config, backbone), out_dir, config)


def train_head(corpus: EncodedCorpus, out_dir: Path, config: NeuralConfig) -> NeuralRun:
    """Train a head on an encoded corpus and write the checkpoint folder ``out_dir``.

    The head trains on ``corpus.device``; the cached states move there once if they fit in
    half of the GPU's free memory, else batch by batch.
    """
    backbone, labels, device = corpus.backbone, LABELS, corpus.device
    frames = backbone.num_frames(corpus.window)
    corpus = _states_on(corpus, device)
    members, histories, epoch_times = [], [], []
    for seed in range(config.seed, config.seed + config.ensemble):
        torch.manual_seed(seed)
        head = build_head(
            config.head, num_layers=backbone.num_layers, frames=frames,
            hidden=backbone.hidden_size, classes=len(labels), layers=config.layers,
            dropout=config.dropout, frame_dropout=config.frame_dropout,
        )  # fmt: skip
        head.standardize.fit(corpus.train.states[:: max(1, len(corpus.train) // 256), 0].cpu())
        head, history, epoch_s = _fit(
            head.to(device), corpus.train, corpus.validation, replace(config, seed=seed)
        )
        members.append(head)
        histories.append(history)
        epoch_times.append(epoch_s)
    head = HeadEnsemble(members).eval() if config.ensemble > 1 else members[0]
    history = histories[0]
    metrics = _split_metrics(head, corpus, labels)
    metrics["timing"] = _timing(backbone, corpus, float(np.mean(epoch_times)))
    head = head.cpu()
    metrics["best_epoch"] = int(np.argmax(history["validation_accuracy"])) + 1
    if config.ensemble > 1:
        metrics["members"] = [
            {"seed": config.seed + k, **_accuracies(member, corpus, labels),
             "best_epoch": int(np.argmax(h["validation_accuracy"])) + 1}
            for k, (member, h) in enumerate(zip(members, histories, strict=True))
        ]  # fmt: skip

    run_config = {
        "model": "neural",
        **asdict(config),
        **backbone.describe(),
        "window": corpus.window,
        "frames": frames,
        "labels": list(labels),
        "sample_rate": SAMPLE_RATE,
        "manifest_hash": corpus.manifest_hash,
        "device": describe_device(device),
        "precision": corpus.precision.precision,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    save_checkpoint(out_dir, head, run_config)
    _write_reports(out_dir, metrics, history, config)
    return NeuralRun(out_dir, metrics, history)


def epoch_draws(targets: torch.Tensor, classes: int) -> int:
    """Samples per epoch: 1.5 x the largest class count x the number of classes."""
    return int(1.5 * np.bincount(targets.cpu().numpy(), minlength=classes).max() * classes)


def balanced_indices(targets: torch.Tensor, classes: int, rng: np.random.Generator) -> np.ndarray:
    """An epoch of clip indices, drawn with replacement so that every class is equally likely."""
    targets_np = targets.cpu().numpy()
    weights = 1.0 / np.bincount(targets_np, minlength=classes)[targets_np]
    draws = epoch_draws(targets, classes)
    return rng.choice(targets_np.size, size=draws, replace=True, p=weights / weights.sum())


def _fit(
    head: nn.Module, train: EncodedClips, val: EncodedClips, config: NeuralConfig
) -> tuple[nn.Module, dict[str, list[float]], float]:
    rng = np.random.default_rng(config.seed)
    device = next(head.parameters()).device
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    classes = int(train.targets.max()) + 1
    steps = config.epochs * -(-epoch_draws(train.targets, classes) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps, pct_start=0.1
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history: dict[str, list[float]] = {
        key: []
        for key in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")
    }
    best_state, best_key = None, (-1.0, 0.0)
    epoch_times = []
    for _ in track(range(config.epochs), f"training head (seed {config.seed})", "epoch"):
        started = time.perf_counter()
        head.train()
        order = balanced_indices(train.targets, classes, rng)
        views = rng.integers(0, train.states.shape[1], size=order.size)
        total_loss, correct = 0.0, 0
        for start in range(0, order.size, config.batch_size):
            rows, cols = (
                torch.from_numpy(order[start : start + config.batch_size]),
                torch.from_numpy(views[start : start + config.batch_size]),
            )
            if train.states.device != rows.device:
                rows, cols = rows.to(train.states.device), cols.to(train.states.device)
            states = train.states[rows, cols].to(device).float()
            targets = train.targets[rows].to(device)
            logits = head(states, train.valid[rows, cols].to(device))
            loss = loss_fn(logits, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * rows.numel()
            correct += int((logits.argmax(1) == targets).sum())
        synchronize(device)
        epoch_times.append(time.perf_counter() - started)
        history["train_loss"].append(total_loss / order.size)
        history["train_accuracy"].append(correct / order.size)
        val_logits = _logits(head, val)
        val_targets = val.targets.cpu()
        val_loss = float(loss_fn(val_logits, val_targets))
        val_acc = float((val_logits.argmax(1) == val_targets).float().mean())
        history["validation_loss"].append(val_loss)
        history["validation_accuracy"].append(val_acc)
        if (val_acc, -val_loss) > best_key:
            best_key, best_state = (val_acc, -val_loss), copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return head.eval(), history, float(np.mean(epoch_times))


def _logits(head: nn.Module, data: EncodedClips, batch_size: int = 64) -> torch.Tensor:
    """Logits (on the CPU) of the first view of every clip, computed where ``head`` is."""
    head.eval()
    device = next(head.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            part = slice(start, start + batch_size)
            states = data.states[part, 0].to(device).float()
            outputs.append(head(states, data.valid[part, 0].to(device)).cpu())
    return torch.cat(outputs)


def _states_on(corpus: EncodedCorpus, device: torch.device) -> EncodedCorpus:
    """``corpus`` with its states on ``device`` if they fit in half its free memory."""
    if device.type != "cuda":
        return corpus
    parts = [corpus.train, corpus.validation, *([corpus.test] if corpus.test else [])]
    size = sum(part.states.nbytes + part.valid.nbytes for part in parts)
    if size > torch.cuda.mem_get_info(device)[0] // 2:
        return corpus

    def moved(data: EncodedClips) -> EncodedClips:
        return EncodedClips(data.states.to(device), data.valid.to(device), data.targets.to(device))

    test = moved(corpus.test) if corpus.test is not None else None
    validation = moved(corpus.validation)
    return replace(corpus, train=moved(corpus.train), validation=validation, test=test)


def _split_metrics(head: nn.Module, corpus: EncodedCorpus, labels: Sequence[str]) -> dict:
    metrics = {"validation": _evaluate(head, corpus.validation, labels)}
    if corpus.test is not None:
        metrics["test"] = _evaluate(head, corpus.test, labels)
    return metrics


def _accuracies(head: nn.Module, corpus: EncodedCorpus, labels: Sequence[str]) -> dict:
    """Validation and test accuracy alone (an ensemble member's line in metrics.json)."""
    return {
        f"{split}_accuracy": round(metrics["accuracy"], 4)
        for split, metrics in _split_metrics(head, corpus, labels).items()
    }


def _evaluate(head: nn.Module, data: EncodedClips, labels: Sequence[str]) -> dict:
    predicted = _logits(head, data).argmax(1).numpy()
    return classification_metrics(data.targets.cpu().numpy(), predicted, labels)


def _timing(backbone: SpeechEncoder, corpus: EncodedCorpus, epoch_s: float) -> dict[str, float]:
    """Measured costs, and what running the encoder in every epoch would have cost instead."""
    device, precision = corpus.device, corpus.precision.precision
    probe = torch.zeros(8, corpus.window, device=device)
    probe[:, ::7] = 0.1
    with torch.inference_mode(), encoder_arithmetic(device, precision):
        backbone(probe)  # warm-up
        synchronize(device)
        started = time.perf_counter()
        backbone(probe)
        synchronize(device)
    per_window = (time.perf_counter() - started) / 8
    targets = corpus.train.targets.cpu()
    draws = epoch_draws(targets, int(targets.max()) + 1)
    uncached_epoch = epoch_s + draws * per_window
    return {
        "device": describe_device(device),
        **corpus.precision.describe(),
        "decode_workers": corpus.workers,
        "encode_s": round(corpus.encode_s, 2),
        "encoder_s_per_window": round(per_window, 5),
        "head_epoch_s": round(epoch_s, 3),
        "uncached_epoch_s_estimate": round(uncached_epoch, 2),
        "epoch_speedup": round(uncached_epoch / max(epoch_s, 1e-9), 1),
        "samples_per_epoch": draws,
    }


def _write_reports(out_dir: Path, metrics: dict, history: dict, config: NeuralConfig) -> None:
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out_dir / "history.json").write_text(json.dumps(history, indent=2))
    title = f"{Path(config.backbone).name} + {config.head} head"
    plot_training_curves(history, out_dir / "training_curves.png", title)
    split = "test" if "test" in metrics else "validation"
    plot_confusion_matrix(
        metrics[split]["confusion_matrix"], LABELS, out_dir / "confusion_matrix.png",
        f"{title}: {split} accuracy {metrics[split]['accuracy']:.3f}",
    )  # fmt: skip
