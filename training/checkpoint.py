"""A neural checkpoint folder: head weights (safetensors) and the config that rebuilds the model.

Only data is stored (JSON and safetensors), never pickled code. The backbone is recorded by its
hub id or absolute path and loaded again with ``from_pretrained``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from ser.errors import ModelError
from ser.training.heads import build_head

HEAD_FILE = "head.safetensors"
SPEAKER_HEAD_FILE = "speaker_head.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class NeuralCheckpoint:
    folder: Path
    config: dict[str, Any]
    head: nn.Module
    speaker_head: nn.Module | None = None  # trained with --normalize speaker


def save_checkpoint(
    folder: Path, head: nn.Module, config: dict[str, Any], *, speaker_head: nn.Module | None = None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    heads = {HEAD_FILE: head, SPEAKER_HEAD_FILE: speaker_head}
    for name, module in heads.items():
        if module is not None:
            state = {key: value.detach().contiguous() for key, value in module.state_dict().items()}
            save_file(state, str(folder / name))
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))


def load_checkpoint(folder: Path) -> NeuralCheckpoint:
    """Rebuild the trained head from ``folder``; ModelError says what is missing."""
    folder = Path(folder)
    missing = [name for name in (HEAD_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelError(
            f"{folder}: not a neural checkpoint (missing {', '.join(missing)}); "
            "run ser-train neural"
        )
    config = json.loads((folder / CONFIG_FILE).read_text())
    if config.get("model") != "neural":
        raise ModelError(f"{folder}: holds a {config.get('model')!r} model, not a neural one")
    head = _build(config)
    head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    speaker_head = None
    if "speaker" in config:
        if not (folder / SPEAKER_HEAD_FILE).is_file():
            raise ModelError(f"{folder}: config.json records a speaker head, but "
                             f"{SPEAKER_HEAD_FILE} is missing")  # fmt: skip
        speaker_head = _build(config, bottleneck=config["speaker"]["bottleneck"])
        speaker_head.load_state_dict(load_file(str(folder / SPEAKER_HEAD_FILE)))
        speaker_head.eval()
    return NeuralCheckpoint(folder, config, head.eval(), speaker_head)


def _build(config: dict[str, Any], bottleneck: int | None = None) -> nn.Module:
    return build_head(
        config["head"],
        num_layers=config["num_layers"],
        frames=config["frames"],
        hidden=config["hidden_size"],
        classes=len(config["labels"]),
        layers=config["layers"],
        dropout=config.get("dropout", 0.3),
        ensemble=config.get("ensemble", 1),
        recording_norm=config.get("recording_norm", "none"),
        bottleneck=bottleneck,
        speech_gate=config.get("pool", "all") == "speech" and bottleneck is None,
    )
