"""Models shipped inside the package, addressed by short names (``--model forest``).

Each ``NAME.onnx`` here has a model card ``NAME.md`` beside it. A model may also ship a variant
for the CUDA provider (``CUDA_VARIANTS``): the same weights as a float32 graph, since the int8
graph that suits the CPU is only partly covered by ONNX Runtime's CUDA kernels (and float16
fails the export's accuracy gate for Whisper; see README "GPU").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SHIPPED = {
    "whisper-pooled": "whisper-pooled.onnx",
    "whisper-pooled-rooms": "whisper-pooled-rooms.onnx",
    "whisper-gated-rooms": "whisper-gated-rooms.onnx",
    "forest": "forest.onnx",
}
CUDA_VARIANTS: dict[str, str] = {}  # whisper-pooled itself is float32 now: it suits CUDA
DEFAULT_MODEL = "whisper-pooled"
VAD_MODEL = "silero_vad_16k_sequence.onnx"
"""Silero VAD's sequence graph (MIT): what ``--segmentation vad`` runs; card ``silero-vad.md``."""


def shipped_model_path(name: str, *, cuda: bool = False) -> Path:
    """The file of a shipped model (its CUDA variant if ``cuda`` and one is installed).

    Raises:
        KeyError: listing the known names.
    """
    if name not in SHIPPED:
        raise KeyError(f"no shipped model {name!r}; shipped: {', '.join(sorted(SHIPPED))}")
    if cuda and name in CUDA_VARIANTS:
        variant = resources.files(__name__) / CUDA_VARIANTS[name]
        if variant.is_file():
            return Path(str(variant))
    return Path(str(resources.files(__name__) / SHIPPED[name]))


def vad_model_path() -> Path:
    """The shipped voice activity detector (see ``silero-vad.md``)."""
    return Path(str(resources.files(__name__) / VAD_MODEL))
