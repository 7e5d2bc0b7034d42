"""The emotion label set, in the order every model's outputs follow."""

from __future__ import annotations

LABELS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)


def label_index(label: str, labels: tuple[str, ...] = LABELS) -> int:
    """Position of ``label`` in ``labels``; a ValueError lists the allowed names."""
    try:
        return labels.index(label)
    except ValueError:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(labels)}") from None
