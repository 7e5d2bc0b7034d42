"""What every benchmark shares: where the data lies, and one line that says where it ran."""

from __future__ import annotations

import os
import platform
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
RAVDESS_16K = SHARED / "data" / "ravdess-speech-16k"
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
