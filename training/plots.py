"""Pictures of a training run: the confusion matrix and the learning curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str
) -> None:
    """Counts per true (rows) and predicted (columns) class, with the row-normalised shade."""
    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for row, col in np.ndindex(counts.shape):
        colour = "white" if shares[row, col] > 0.5 else "black"
        ax.text(col, row, str(counts[row, col]), ha="center", va="center", color=colour)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(history: Mapping[str, Sequence[float]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, train against validation."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history["train_loss"]) + 1)
    for split in ("train", "validation"):
        loss_ax.plot(epochs, history[f"{split}_loss"], label=split)
        acc_ax.plot(epochs, history[f"{split}_accuracy"], label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (loss_ax, acc_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(diagrams: Mapping[str, Mapping[str, object]], path: Path, title: str) -> None:
    """Reliability diagrams side by side: accuracy against confidence per bin, with the ECE.

    ``diagrams`` maps a panel title (e.g. "before calibration") to a dict with ``ece``,
    ``confidence``, ``accuracy`` and ``count`` lists, as in ``metrics.json``.
    """
    fig, axes = plt.subplots(1, len(diagrams), figsize=(5 * len(diagrams), 4.6), squeeze=False)
    for ax, (name, diagram) in zip(axes[0], diagrams.items(), strict=True):
        count = np.asarray(diagram["count"])
        bins = count.size
        centres = (np.arange(bins) + 0.5) / bins
        filled = count > 0
        ax.bar(centres[filled], np.asarray(diagram["accuracy"])[filled], width=1 / bins,
               edgecolor="black", alpha=0.7, label="accuracy")  # fmt: skip
        ax.plot(np.asarray(diagram["confidence"])[filled], np.asarray(diagram["accuracy"])[filled],
                "o", color="tab:red", label="mean confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)",
               ylabel="accuracy", title=f"{name}: ECE {diagram['ece']:.3f}")  # fmt: skip
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
