"""What every benchmark shares: where the data lies, and one line that says where it ran."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path

import click

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAVDESS_16K = SHARED / "data" / "ravdess-speech-16k"
NEMO = SHARED / "data" / "nemo-16k" / "manifest.csv"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [
                line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} cores usable, Python {platform.python_version()}, {platform.system()}"


def neural_run_options(command: Callable) -> Callable:
    """The options every head-training benchmark takes: backbone, corpus, seeds and epochs."""
    options = [
        click.option("--backbone", default=str(WHISPER_TINY), show_default=True),
        click.option("--data", type=click.Path(exists=True, path_type=Path), default=RAVDESS_16K),
        click.option("--seeds", default=3, show_default=True),
        click.option("--epochs", default=20, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command
