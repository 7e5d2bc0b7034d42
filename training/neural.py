"""Train a classification head on a frozen speech encoder (``ser-train neural``).

The recipe: 4 s windows (random crops in training, centred and zero-padded in evaluation),
noise and time-stretch augmentation, class-balanced sampling with replacement (an epoch draws
1.5 x the largest class count x the number of classes), AdamW with a one-cycle schedule and
label smoothing, and the epoch with the best validation UAR kept. Several corpora train one head
(``--data`` repeated): each keeps its own splits and label set, sampling balances corpora as well
as classes (:mod:`ser.training.sampling`), the loss can be restricted to each clip's label set
(:mod:`ser.training.losses`), and the epoch is chosen on the mean over corpora of each one's
validation UAR, so neither a large corpus nor a large class dominates. A temperature fitted on
validation calibrates the probabilities (:mod:`ser.training.calibration`). The encoder runs once per
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
from ser.corpus import (
    SPLITS,
    Clip,
    check_corpora,
    corpus_names,
    label_set,
    manifest_hash,
    select,
)
from ser.errors import CorpusError
from ser.labels import LABELS
from ser.training.augment import Augmentation
from ser.training.backbones import (
    DEFAULT_BACKBONE,
    WHISPER_DYNAMIC_RANGE_DB,
    SpeechEncoder,
    load_backbone,
)
from ser.training.cache import ArrayCache
from ser.training.calibration import fit_temperature, reliability
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
from ser.training.losses import corpus_loss
from ser.training.metrics import classification_metrics
from ser.training.plots import plot_confusion_matrix, plot_reliability, plot_training_curves
from ser.training.progress import announce_encoding, track
from ser.training.sampling import balanced_indices, epoch_draws
from ser.training.speaker_norm import centre_by_speaker, speaker_ids
from ser.training.speech_gate import FittedGate, fit_speech_gate


@dataclass(frozen=True)
class NeuralConfig:
    backbone: str = DEFAULT_BACKBONE
    head: str = "pooled"
    layers: str = "weighted"
    window_s: float = 4.0
    views: int | tuple[int, ...] = 4
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
    whisper_dynamic_range_db: float = WHISPER_DYNAMIC_RANGE_DB
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    loss: str = "plain"
    sampling: str = "class-corpus"
    recording_norm: str = "none"
    calibrate: bool = True
    samples_per_epoch: int | None = None
    normalize: str = "none"
    speaker_bottleneck: int = 32
    augment_background: float = 0.0
    pool: str = "all"

    def views_for(self, corpus_index: int, corpora: int) -> int:
        """Training views of one corpus: one ``views`` for all, or one per corpus in order.

        Raises:
            CorpusError: when a list of views does not match the number of corpora.
        """
        if isinstance(self.views, int):
            return self.views
        if len(self.views) == 1:
            return self.views[0]
        if len(self.views) != corpora:
            raise CorpusError(
                f"{len(self.views)} --views values for {corpora} corpora; give one, or one per "
                "--data in the same order"
            )
        return self.views[corpus_index]


@dataclass(frozen=True)
class NeuralRun:
    out_dir: Path
    metrics: dict
    history: dict


@dataclass(frozen=True)
class EncodedPart:
    """One corpus's splits through the encoder, and the classes it teaches."""

    name: str
    labels: tuple[str, ...]
    train: EncodedClips
    validation: EncodedClips
    test: EncodedClips | None
    manifest_hash: str

    def describe(self) -> dict:
        """What ``config.json`` and the ONNX metadata record of the corpus."""
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {
            "name": self.name,
            "labels": list(self.labels),
            "manifest_hash": self.manifest_hash,
            "clips": {split: len(data) for split, data in splits.items() if data is not None},
            "views": int(self.train.states.shape[1]),
        }


@dataclass(frozen=True)
class EncodedCorpus:
    """One or more corpora run through the frozen encoder: what head training needs."""

    backbone: SpeechEncoder
    window: int
    parts: tuple[EncodedPart, ...]
    manifest_hash: str
    encode_s: float
    device: torch.device
    precision: PrecisionChoice
    workers: int
    clips: tuple[Clip, ...] = ()
    gate: FittedGate | None = None  # fitted before encoding with --pool speech

    @property
    def validation(self) -> EncodedClips:
        """Every corpus's validation clips, in corpus order."""
        return _concatenate([part.validation for part in self.parts])

    @property
    def test(self) -> EncodedClips | None:
        """Every corpus's test clips, in corpus order (None if no corpus has a test split)."""
        tests = [part.test for part in self.parts if part.test is not None]
        return _concatenate(tests) if tests else None

    def subset(self, names: Sequence[str]) -> EncodedCorpus:
        """The same encoded states restricted to the corpora ``names`` (no copy, no encoding)."""
        parts = tuple(part for part in self.parts if part.name in names)
        if not parts:
            raise CorpusError(f"no corpus named {', '.join(names)}")
        clips = tuple(clip for clip in self.clips if clip.corpus in names)
        return replace(  # a speech gate is fitted again, on these corpora's clips alone
            self, parts=parts, clips=clips, manifest_hash=manifest_hash(clips), gate=None
        )


PROBE_CLIPS = 16
ENCODER_BATCH = {"cpu": 16, "cuda": 64}


def encode_corpus(
    clips: Sequence[Clip],
    cache_dir: Path,
    config: NeuralConfig,
    backbone: SpeechEncoder | None = None,
) -> EncodedCorpus:
    """Check the corpora, load the backbone, and encode every split (from the cache if present).

    Raises:
        CorpusError, ModelError: before any encoding, for a bad corpus or backbone.
        DeviceError: for ``--device cuda`` where PyTorch sees no GPU.
    """
    check_pool(config)
    device = resolve_device(config.device)
    check_corpora(clips, ("train", "validation"), LABELS)
    names = corpus_names(clips)
    views = [config.views_for(k, len(names)) for k in range(len(names))]
    check_readable(clips)
    backbone = backbone or load_backbone(
        config.backbone,
        whisper_pad_30s=config.whisper_pad_30s,
        whisper_dynamic_range_db=config.whisper_dynamic_range_db,
    )
    backbone.to(device)
    window = round(config.window_s * SAMPLE_RATE)
    workers = config.workers or (min(8, os.cpu_count() or 1) if device.type == "cuda" else 1)
    started = time.perf_counter()
    precision = _choose_precision(backbone, select(clips, "validation"), window, device, config)
    gate = None
    if config.pool == "speech":  # before encoding: a corpus without speech fails in seconds
        gate = _fit_gate(backbone, clips, window, config, device, precision.precision)
    cache = ArrayCache(cache_dir, "encoder-states")
    shared = dict(
        backbone=backbone, cache=cache, window=window, labels=LABELS, device=device,
        precision=precision.precision, workers=workers, batch_size=ENCODER_BATCH[device.type],
    )  # fmt: skip
    parts = []
    for name, corpus_views in zip(names, views, strict=True):
        own = [clip for clip in clips if clip.corpus == name]
        tag = f" {name}" if len(names) > 1 else ""
        splits = {split: len(select(own, split)) for split in SPLITS if select(own, split)}
        announce_encoding(
            splits, views=corpus_views, window_bytes=window_bytes(backbone, window),
            folder=cache.folder,
        )  # fmt: skip
        train = encode_clips(
            select(own, "train"), views=corpus_views, seed=config.view_seed, train=True,
            augmentation=Augmentation(background_p=config.augment_background)
            if config.augment else None, desc=f"encoding{tag} train",
            **shared,
        )  # fmt: skip
        validation = encode_clips(
            select(own, "validation"), desc=f"encoding{tag} validation", **shared
        )
        test_clips = select(own, "test")
        test = None
        if test_clips:
            test = encode_clips(test_clips, desc=f"encoding{tag} test", **shared)
        labels = tuple(label_set(own, name, LABELS))
        parts.append(EncodedPart(name, labels, train, validation, test, manifest_hash(own)))
    elapsed = time.perf_counter() - started
    return EncodedCorpus(
        backbone, window, tuple(parts), manifest_hash(clips), elapsed, device, precision, workers,
        tuple(clips), gate,
    )  # fmt: skip


POOLS = ("all", "speech")


def check_pool(config: NeuralConfig) -> None:
    """``--pool speech`` needs the pooled head, and speaker mode does not gate its frames yet.

    Raises:
        CorpusError: for an unknown pool or a combination that cannot be built.
    """
    if config.pool not in POOLS:
        raise CorpusError(f"unknown --pool {config.pool!r}; expected one of {', '.join(POOLS)}")
    if config.pool == "speech" and (config.head != "pooled" or config.normalize == "speaker"):
        raise CorpusError("--pool speech needs the pooled head and no --normalize speaker")


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
    """Train a head on encoded corpora and write the checkpoint folder ``out_dir``.

    The head trains on ``corpus.device``; the cached states move there once if they fit in
    half of the GPU's free memory, else batch by batch.
    """
    check_pool(config)
    backbone, labels, device = corpus.backbone, LABELS, corpus.device
    frames = backbone.num_frames(corpus.window)
    corpus = _states_on(corpus, device)
    if config.normalize == "speaker":  # fail before any training on a corpus without speakers
        speakers = _speakers_by_split(corpus)
    gate = None
    if config.pool == "speech":
        gate = corpus.gate or _fit_gate(
            corpus.backbone, corpus.clips, corpus.window, config, device,
            corpus.precision.precision,
        )  # fmt: skip
    trained = _train_heads(corpus, config, frames, gate=gate)
    history = trained.histories[0]
    metrics, temperature = _evaluate(trained, corpus, config)
    if gate is not None:
        metrics["speech_gate"] = gate.report
    metrics["timing"] = _timing(
        backbone, corpus, float(np.mean(trained.epoch_times)), config.samples_per_epoch
    )
    head = trained.head.cpu()

    run_config = {
        "model": "neural",
        **asdict(config),
        **backbone.describe(),
        "window": corpus.window,
        "frames": frames,
        "labels": list(labels),
        "sample_rate": SAMPLE_RATE,
        "manifest_hash": corpus.manifest_hash,
        "corpora": [part.describe() for part in corpus.parts],
        "temperature": round(temperature, 6),
        "device": describe_device(device),
        "precision": corpus.precision.precision,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    speaker_head = None
    if config.normalize == "speaker":  # after every plain measurement: this centres in place
        speaker_head, run_config["speaker"], metrics["speaker"] = _train_speaker_heads(
            corpus, speakers, config, frames
        )
    save_checkpoint(out_dir, head, run_config, speaker_head=speaker_head)
    _write_reports(out_dir, metrics, history, config)
    return NeuralRun(out_dir, metrics, history)


@dataclass(frozen=True)
class TrainedHeads:
    head: nn.Module  # one head, or the ensemble of ``members``
    members: list[nn.Module]
    histories: list[dict]
    epoch_times: list[float]
    best_epochs: list[int]


def _fit_gate(
    backbone: SpeechEncoder, clips: Sequence[Clip], window: int, config: NeuralConfig,
    device: torch.device, precision: str,
) -> FittedGate:  # fmt: skip
    """The speech gate every head of this run shares, fitted on training crops of all corpora."""
    return fit_speech_gate(
        backbone, select(clips, "train"), window, seed=config.view_seed, device=device,
        precision=precision, batch_size=ENCODER_BATCH[device.type],
    )  # fmt: skip


def _train_heads(
    corpus: EncodedCorpus,
    config: NeuralConfig,
    frames: int,
    bottleneck: int | None = None,
    gate: FittedGate | None = None,
) -> TrainedHeads:
    """``config.ensemble`` heads, seeds ``config.seed`` onwards, each at its best epoch."""
    backbone = corpus.backbone
    fit_states, fit_valid = _standardize_sample(corpus)
    members, histories, epoch_times, best_epochs = [], [], [], []
    for seed in range(config.seed, config.seed + config.ensemble):
        torch.manual_seed(seed)
        head = build_head(
            config.head, num_layers=backbone.num_layers, frames=frames,
            hidden=backbone.hidden_size, classes=len(LABELS), layers=config.layers,
            dropout=config.dropout, frame_dropout=config.frame_dropout,
            recording_norm=config.recording_norm, bottleneck=bottleneck,
            speech_gate=gate is not None,
        )  # fmt: skip
        if gate is not None:
            head.gate.set_rule(gate.weight, gate.bias)
        recording = getattr(head, "recording", None)
        with torch.no_grad():
            valid = head.gate(fit_states, fit_valid) if gate is not None else fit_valid
            sample = recording(fit_states, valid) if recording is not None else fit_states
        head.standardize.fit(sample)
        head, history, epoch_s, best = _fit(
            head.to(corpus.device), corpus, replace(config, seed=seed)
        )
        members.append(head)
        histories.append(history)
        epoch_times.append(epoch_s)
        best_epochs.append(best)
    head = HeadEnsemble(members).eval() if config.ensemble > 1 else members[0]
    return TrainedHeads(head, members, histories, epoch_times, best_epochs)


def _evaluate(
    trained: TrainedHeads, corpus: EncodedCorpus, config: NeuralConfig
) -> tuple[dict, float]:
    """Trained heads' metrics (per split, corpus and member; calibration) and the temperature
    fitted on validation (1 with ``--no-calibrate``)."""
    outputs = {
        split: _split_logits(trained.head, corpus, split) for split in ("validation", "test")
    }
    temperature = 1.0
    if config.calibrate:
        temperature = fit_temperature(outputs["validation"].logits, outputs["validation"].targets)
    metrics = _split_metrics(outputs, corpus, LABELS)
    metrics["calibration"] = _calibration_report(outputs, corpus, temperature)
    members, best_epochs = trained.members, trained.best_epochs
    metrics["best_epoch"] = best_epochs[0]
    if config.ensemble > 1:
        metrics["members"] = [
            {"seed": config.seed + k, **_accuracies(member, corpus), "best_epoch": best}
            for k, (member, best) in enumerate(zip(members, best_epochs, strict=True))
        ]  # fmt: skip
        metrics["ensemble_validation_uar"] = [
            round(_selection_uar(_split_logits(HeadEnsemble(members[:k]), corpus, "validation")), 4)
            for k in range(1, len(members) + 1)
        ]
    return metrics, temperature


def _speakers_by_split(corpus: EncodedCorpus) -> dict[str, list[tuple[str, ...]]]:
    """Every split's speaker ids, per corpus (:func:`speaker_ids` checks there are some)."""
    return {
        split: [
            speaker_ids(getattr(part, split).speakers, part.name)
            for part in corpus.parts
            if getattr(part, split) is not None
        ]
        for split in ("train", "validation", "test")
    }


def _train_speaker_heads(
    corpus: EncodedCorpus,
    speakers: dict[str, list[tuple[str, ...]]],
    config: NeuralConfig,
    frames: int,
) -> tuple[nn.Module, dict, dict]:
    """Heads on speaker-centred states: every split centred by its own speakers' means, as
    ``ser-batch --speaker-from folder`` does for a corpus whose folders are its speakers."""
    if config.head != "pooled" or config.recording_norm != "none":
        raise CorpusError("--normalize speaker needs the pooled head and no recording norm")
    for split, per_part in speakers.items():
        datas = [getattr(part, split) for part in corpus.parts if getattr(part, split) is not None]
        for data, ids in zip(datas, per_part, strict=True):
            centre_by_speaker(data, ids)
    trained = _train_heads(corpus, config, frames, bottleneck=config.speaker_bottleneck)
    metrics, temperature = _evaluate(trained, corpus, config)
    metrics["best_epochs"] = trained.best_epochs
    record = {
        "normalise": "mean",
        "where": "frame features (the bottleneck, before any non-linearity)",
        "bottleneck": config.speaker_bottleneck,
        "ensemble": config.ensemble,
        "temperature": round(temperature, 6),
    }
    return trained.head.cpu(), record, metrics


@dataclass(frozen=True)
class SplitLogits:
    """A split's logits over every corpus, with each clip's class and corpus index."""

    logits: torch.Tensor
    targets: torch.Tensor
    corpora: torch.Tensor


def _fit(
    head: nn.Module, corpus: EncodedCorpus, config: NeuralConfig
) -> tuple[nn.Module, dict[str, list[float]], float, int]:
    rng = np.random.default_rng(config.seed)
    device = next(head.parameters()).device
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    parts = [part.train for part in corpus.parts]
    targets = torch.cat([part.targets.cpu() for part in parts])
    owner = torch.cat([torch.full((len(part),), k) for k, part in enumerate(parts)])
    local = torch.cat([torch.arange(len(part)) for part in parts])
    view_counts = np.array([part.states.shape[1] for part in parts])
    allowed = _label_masks(corpus)
    classes = len(LABELS)
    draws = config.samples_per_epoch or epoch_draws(targets, classes)
    steps = config.epochs * -(-draws // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps, pct_start=0.1
    )
    history: dict[str, list[float]] = {
        key: []
        for key in (
            "train_loss", "train_accuracy", "validation_loss", "validation_accuracy",
            "validation_uar",
        )
    }  # fmt: skip
    best_state, best_key, best_epoch = None, (-1.0, 0.0), 0
    epoch_times = []
    for epoch in track(range(config.epochs), f"training head (seed {config.seed})", "epoch"):
        started = time.perf_counter()
        head.train()
        order = balanced_indices(targets, classes, rng, owner, config.sampling, draws)
        views = (rng.random(order.size) * view_counts[owner[order].numpy()]).astype(np.int64)
        total_loss, correct = 0.0, 0
        for start in range(0, order.size, config.batch_size):
            rows = torch.from_numpy(order[start : start + config.batch_size])
            cols = torch.from_numpy(views[start : start + config.batch_size])
            states, valid = _gather(parts, owner[rows], local[rows], cols)
            batch_targets = targets[rows].to(device)
            logits = head(states.to(device).float(), valid.to(device))
            loss = corpus_loss(
                logits, batch_targets, allowed[owner[rows]].to(device), kind=config.loss,
                label_smoothing=config.label_smoothing,
            )  # fmt: skip
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * rows.numel()
            correct += int((logits.argmax(1) == batch_targets).sum())
        synchronize(device)
        epoch_times.append(time.perf_counter() - started)
        history["train_loss"].append(total_loss / order.size)
        history["train_accuracy"].append(correct / order.size)
        val = _split_logits(head, corpus, "validation")
        val_loss = corpus_loss(
            val.logits, val.targets, allowed[val.corpora], kind=config.loss,
            label_smoothing=config.label_smoothing,
        ).item()  # fmt: skip
        val_uar = _selection_uar(val)
        history["validation_loss"].append(val_loss)
        history["validation_accuracy"].append(
            float((val.logits.argmax(1) == val.targets).float().mean())
        )
        history["validation_uar"].append(val_uar)
        if (val_uar, -val_loss) > best_key:
            best_key, best_epoch = (val_uar, -val_loss), epoch + 1
            best_state = copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    return head.eval(), history, float(np.mean(epoch_times)), best_epoch


def _gather(
    parts: Sequence[EncodedClips], owner: torch.Tensor, rows: torch.Tensor, views: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """States and masks of (corpus, clip, view) triples, in the order given."""
    if len(parts) == 1:
        part = parts[0]
        rows, views = rows.to(part.states.device), views.to(part.states.device)
        return part.states[rows, views], part.valid[rows, views]
    first = parts[0]
    states = torch.empty((rows.numel(), *first.states.shape[2:]), dtype=first.states.dtype)
    valid = torch.empty((rows.numel(), first.valid.shape[2]), dtype=torch.bool)
    states, valid = states.to(first.states.device), valid.to(first.states.device)
    for k, part in enumerate(parts):
        mine = (owner == k).nonzero()[:, 0]
        if mine.numel():
            at = part.states.device
            states[mine.to(at)] = part.states[rows[mine].to(at), views[mine].to(at)]
            valid[mine.to(at)] = part.valid[rows[mine].to(at), views[mine].to(at)]
    return states, valid


def _label_masks(corpus: EncodedCorpus) -> torch.Tensor:
    """``[corpora, classes]``: True where a corpus teaches the class."""
    return torch.tensor([[label in part.labels for label in LABELS] for part in corpus.parts])


def _standardize_sample(corpus: EncodedCorpus, total: int = 256) -> tuple[torch.Tensor, ...]:
    """About ``total`` first views of training clips, spread evenly over the corpora."""
    per_corpus = max(1, total // len(corpus.parts))
    states, valid = [], []
    for part in corpus.parts:
        step = max(1, len(part.train) // per_corpus)
        states.append(part.train.states[::step, 0].cpu().float())
        valid.append(part.train.valid[::step, 0].cpu())
    return torch.cat(states), torch.cat(valid)


def _split_logits(head: nn.Module, corpus: EncodedCorpus, split: str) -> SplitLogits | None:
    """Logits of every corpus's ``split`` (None when no corpus has it)."""
    logits, targets, corpora = [], [], []
    for k, part in enumerate(corpus.parts):
        data = getattr(part, split)
        if data is None:
            continue
        logits.append(_logits(head, data))
        targets.append(data.targets.cpu())
        corpora.append(torch.full((len(data),), k))
    if not logits:
        return None
    return SplitLogits(torch.cat(logits), torch.cat(targets), torch.cat(corpora))


def _selection_uar(split: SplitLogits) -> float:
    """The mean over corpora of each corpus's UAR: what chooses the epoch and the ensemble."""
    predicted = split.logits.argmax(1)
    scores = []
    for k in split.corpora.unique():
        mine = split.corpora == k
        truth, guess = split.targets[mine], predicted[mine]
        recalls = [float((guess[truth == c] == c).float().mean()) for c in truth.unique()]
        scores.append(float(np.mean(recalls)))
    return float(np.mean(scores))


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


def _concatenate(parts: Sequence[EncodedClips]) -> EncodedClips:
    if len(parts) == 1:
        return parts[0]
    return EncodedClips(
        torch.cat([part.states for part in parts]),
        torch.cat([part.valid for part in parts]),
        torch.cat([part.targets for part in parts]),
        tuple(speaker for part in parts for speaker in part.speakers),
    )


def _states_on(corpus: EncodedCorpus, device: torch.device) -> EncodedCorpus:
    """``corpus`` with its states on ``device`` if they fit in half its free memory."""
    if device.type != "cuda":
        return corpus
    datas = [
        data
        for part in corpus.parts
        for data in (part.train, part.validation, part.test)
        if data is not None
    ]
    size = sum(data.states.nbytes + data.valid.nbytes for data in datas)
    if size > torch.cuda.mem_get_info(device)[0] // 2:
        return corpus

    def moved(data: EncodedClips | None) -> EncodedClips | None:
        if data is None:
            return None
        return replace(
            data, states=data.states.to(device), valid=data.valid.to(device),
            targets=data.targets.to(device),
        )  # fmt: skip

    parts = tuple(
        replace(part, train=moved(part.train), validation=moved(part.validation),
                test=moved(part.test))
        for part in corpus.parts
    )  # fmt: skip
    return replace(corpus, parts=parts)


def _split_metrics(
    outputs: dict[str, SplitLogits | None], corpus: EncodedCorpus, labels: Sequence[str]
) -> dict:
    """Pooled metrics per split, the selection UAR, and every corpus's own metrics."""
    metrics: dict = {}
    per_corpus: dict = {part.name: {"labels": list(part.labels)} for part in corpus.parts}
    for split, output in outputs.items():
        if output is None:
            continue
        predicted = output.logits.argmax(1).numpy()
        metrics[split] = classification_metrics(output.targets.numpy(), predicted, labels)
        metrics[split]["mean_corpus_uar"] = round(_selection_uar(output), 4)
        for k, part in enumerate(corpus.parts):
            mine = (output.corpora == k).numpy()
            if mine.any():
                per_corpus[part.name][split] = classification_metrics(
                    output.targets.numpy()[mine], predicted[mine], labels
                )
    metrics["corpora"] = per_corpus
    return metrics


def _accuracies(head: nn.Module, corpus: EncodedCorpus) -> dict:
    """Validation and test accuracy and UAR alone (an ensemble member's line in metrics.json)."""
    scores = {}
    for split in ("validation", "test"):
        output = _split_logits(head, corpus, split)
        if output is not None:
            hits = (output.logits.argmax(1) == output.targets).float().mean()
            scores[f"{split}_accuracy"] = round(float(hits), 4)
            scores[f"{split}_mean_corpus_uar"] = round(_selection_uar(output), 4)
    return scores


def _calibration_report(
    outputs: dict[str, SplitLogits | None], corpus: EncodedCorpus, temperature: float
) -> dict:
    """The temperature, and ECE with reliability bins before and after it, per split and corpus."""
    report: dict = {"temperature": round(temperature, 6), "fitted_on": "validation"}
    for split, output in outputs.items():
        if output is None:
            continue
        targets = output.targets.numpy()
        before = torch.softmax(output.logits.double(), 1).numpy()
        after = torch.softmax(output.logits.double() / temperature, 1).numpy()
        report[split] = {
            "all": {"before": asdict(reliability(before, targets)),
                    "after": asdict(reliability(after, targets))},
        }  # fmt: skip
        for k, part in enumerate(corpus.parts):
            mine = (output.corpora == k).numpy()
            if mine.any():
                report[split][part.name] = {
                    "ece_before": reliability(before[mine], targets[mine]).ece,
                    "ece_after": reliability(after[mine], targets[mine]).ece,
                }
    return report


def _timing(
    backbone: SpeechEncoder, corpus: EncodedCorpus, epoch_s: float, samples: int | None
) -> dict[str, float]:
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
    targets = torch.cat([part.train.targets.cpu() for part in corpus.parts])
    draws = samples or epoch_draws(targets, len(LABELS))
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
    corpora = metrics["corpora"]
    if len(corpora) > 1:
        for name, scores in corpora.items():
            if split in scores:
                plot_confusion_matrix(
                    scores[split]["confusion_matrix"], LABELS,
                    out_dir / f"confusion_matrix_{name}.png",
                    f"{title}: {name} {split} accuracy {scores[split]['accuracy']:.3f}, "
                    f"UAR {scores[split]['uar']:.3f}",
                )  # fmt: skip
    calibration = metrics["calibration"].get(split)
    if calibration is not None:
        temperature = metrics["calibration"]["temperature"]
        plot_reliability(
            {"before calibration": calibration["all"]["before"],
             f"after (T = {temperature:.2f})": calibration["all"]["after"]},
            out_dir / "reliability.png", f"{title}: {split} clips, all corpora",
        )  # fmt: skip
