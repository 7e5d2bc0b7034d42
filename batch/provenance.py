"""The provenance sidecar: which model, runtime, engine and versions produced a report."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile
import soxr

from ser import __version__
from ser.files import atomic_write


def provenance_path(report: Path) -> Path:
    """``REPORT.provenance.json`` beside the report."""
    return report.with_name(f"{report.name}.provenance.json")


def write_provenance(
    report: Path,
    model: Any,
    *,
    settings: str,
    started: str,
    rows: Sequence[Mapping[str, str]],
    options: Mapping[str, Any],
    engine: Mapping[str, Any],
) -> Path:
    """Write the sidecar of ``report`` atomically and return its path.

    Args:
        report: the report it describes.
        model: the loaded model (``path``, ``sha256``, ``provider``).
        settings: the rows' ``settings`` cell (window and hop, or the feature set).
        started: when the run started (``%Y-%m-%dT%H:%M:%S%z``).
        rows: the report's rows, counted (files, failed).
        options: the run's options that shaped the rows or the run.
        engine: how the rows were made (:meth:`ser.batch.engine.Engine.describe`).
    """
    info = {
        "report": report.name,
        "model": str(model.path),
        "model_sha256": model.sha256,
        "settings": settings,
        "execution_provider": model.provider,
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": len(rows),
        "failed": sum(row["status"] == "error" for row in rows),
        "no_speech": sum(row["status"] == "no_speech" for row in rows),
        "options": dict(options),
        "engine": dict(engine),
        "versions": {
            "ser": __version__,
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "soundfile": soundfile.__version__,
            "soxr": soxr.__version__,
        },
    }
    path = provenance_path(report)
    with atomic_write(path) as handle:
        handle.write(json.dumps(info, indent=2))
    return path
