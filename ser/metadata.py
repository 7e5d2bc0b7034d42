"""The contract an exported model carries in its ONNX ``metadata_props``.

Everything a runner needs to use a model lives in the file itself: the labels in output order,
the sample rate, the frontend ("egemaps" features or raw "waveform"), the window and hop, and
provenance (training metrics, manifest hash, versions). Values are strings; structured values
are JSON. Nothing executable is stored, and no run-time settings (device, threads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ser.errors import ModelError

FORMAT = "ser-model/1"
FRONTENDS = ("egemaps", "waveform")
_REQUIRED = ("ser_format", "frontend", "labels", "sample_rate", "input_name", "probs_name")


@dataclass(frozen=True)
class ModelMetadata:
    """What ser writes into, and reads back from, every ONNX model it exports."""

    frontend: str
    labels: tuple[str, ...]
    sample_rate: int
    input_name: str
    probs_name: str
    window_s: float | None = None
    hop_s: float | None = None
    dynamic_length: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.frontend not in FRONTENDS:
            raise ModelError(f"unknown frontend {self.frontend!r}; expected {', '.join(FRONTENDS)}")
        if not self.labels:
            raise ModelError("a model needs at least one label")

    def to_props(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props``."""
        props = {
            "ser_format": FORMAT,
            "frontend": self.frontend,
            "labels": json.dumps(list(self.labels)),
            "sample_rate": str(self.sample_rate),
            "input_name": self.input_name,
            "probs_name": self.probs_name,
            "dynamic_length": json.dumps(self.dynamic_length),
        }
        if self.window_s is not None:
            props["window_s"] = repr(float(self.window_s))
        if self.hop_s is not None:
            props["hop_s"] = repr(float(self.hop_s))
        for key, value in self.extra.items():
            props[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], *, source: str = "model") -> ModelMetadata:
        """Parse ``metadata_props``; ModelError names what is missing or malformed."""
        missing = [key for key in _REQUIRED if key not in props]
        if missing:
            raise ModelError(
                f"{source}: not a ser model (metadata lacks {', '.join(missing)}); "
                "export models with ser-export"
            )
        if props["ser_format"] != FORMAT:
            raise ModelError(f"{source}: unsupported model format {props['ser_format']!r}")
        known = {*_REQUIRED, "window_s", "hop_s", "dynamic_length"}
        try:
            return cls(
                frontend=props["frontend"],
                labels=tuple(json.loads(props["labels"])),
                sample_rate=int(props["sample_rate"]),
                input_name=props["input_name"],
                probs_name=props["probs_name"],
                window_s=float(props["window_s"]) if "window_s" in props else None,
                hop_s=float(props["hop_s"]) if "hop_s" in props else None,
                dynamic_length=json.loads(props.get("dynamic_length", "false")),
                extra={key: value for key, value in props.items() if key not in known},
            )
        except (ValueError, TypeError) as error:
            raise ModelError(f"{source}: malformed ser metadata ({error})") from None

    def extra_json(self, key: str, default: Any = None) -> Any:
        """An ``extra`` value decoded from JSON (the raw string when it is not JSON)."""
        if key not in self.extra:
            return default
        try:
            return json.loads(self.extra[key])
        except (TypeError, ValueError):
            return self.extra[key]
