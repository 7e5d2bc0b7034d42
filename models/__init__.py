"""Models shipped inside the package, addressed by short names (``--model forest``).

Each ``NAME.onnx`` here has a model card ``NAME.md`` beside it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = {"whisper-pooled": "whisper-pooled.onnx", "forest": "forest.onnx"}
DEFAULT_MODEL = "whisper-pooled"


def shipped_model_path(name: str) -> Path:
    """The file of a shipped model; KeyError lists the known names."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; shipped: {', '.join(sorted(SHIPPED))}")
    return Path(str(resources.files(__name__) / SHIPPED[name]))
