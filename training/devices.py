"""Where ``ser-train`` runs, and in which arithmetic the frozen encoder runs there.

``--device auto`` takes CUDA when PyTorch sees a GPU; asking for ``cuda`` where it sees none is
a one-line :class:`DeviceError`, never a silent fall-back.

``--precision auto`` keeps float32 on the CPU. On CUDA it encodes one probe batch in float32,
bf16 and fp16 autocast, and takes the autocast type whose states lie closest to float32,
provided that deviation is within :data:`AUTOCAST_TOLERANCE`; otherwise float32. The deviation
is measured in the units the head sees: each layer and channel's difference divided by that
channel's spread over the probe (the head standardises its input the same way), as an RMS.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ser.errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

AUTOCAST_TOLERANCE = 0.02
"""Largest RMS deviation from float32, in units of each channel's spread, that ``auto`` accepts.

2% of a channel's spread is far inside what the recipe's own augmentation moves the states by
(noise of up to 1% of the peak, tempo changes of up to 10%); the README gives the deviations and
the effect on a trained head measured on a GPU.
"""


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` as a torch device.

    Raises:
        DeviceError: ``cuda`` asked for where PyTorch has no CUDA or sees no GPU.
    """
    if name not in DEVICES:
        raise DeviceError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            reason = f"this PyTorch ({torch.__version__}) is built without CUDA"
        else:
            reason = f"PyTorch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA GPU"
        raise DeviceError(
            f"--device cuda: {reason}; install a CUDA build of PyTorch (on Linux a plain "
            "`pip install torch`) on a machine with an NVIDIA GPU, or use --device cpu"
        )
    return torch.device("cuda")


def describe_device(device: torch.device) -> str:
    """``cpu`` or ``cuda (NVIDIA H200)``: what metrics.json records."""
    if device.type != "cuda":
        return device.type
    return f"cuda ({torch.cuda.get_device_name(device)})"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def encoder_arithmetic(device: torch.device, precision: str) -> Iterator[None]:
    """Run the encoder in ``precision``: autocast for bf16/fp16; true float32 otherwise.

    Float32 on CUDA turns cuDNN's TF32 convolutions off (PyTorch allows them by default), so
    float32 states agree with the CPU's to float32 rounding.
    """
    if precision in AUTOCAST_TYPES:
        with torch.autocast(device.type, dtype=AUTOCAST_TYPES[precision]):
            yield
    elif device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    else:
        yield


def state_deviation(reference: torch.Tensor, other: torch.Tensor) -> float:
    """RMS of ``other - reference`` over states ``[batch, layers, frames, hidden]``, each
    layer and channel divided by its spread in ``reference``; infinite if ``other`` is not
    finite (an fp16 overflow)."""
    reference, other = reference.float(), other.float()
    if not torch.isfinite(other).all():
        return math.inf
    spread = reference.std(dim=(0, 2), keepdim=True).clamp(min=1e-5)
    return float(((other - reference) / spread).pow(2).mean().sqrt())


@dataclass(frozen=True)
class PrecisionChoice:
    """The encoder arithmetic chosen, and the deviations from float32 that decided it."""

    precision: str
    deviations: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        rounded = {
            k: (round(v, 5) if math.isfinite(v) else "inf") for k, v in self.deviations.items()
        }
        return {
            "precision": self.precision,
            "autocast_deviation": rounded,
            "autocast_tolerance": AUTOCAST_TOLERANCE,
        }


def choose_precision(
    requested: str, device: torch.device, encode: Callable[[str], torch.Tensor]
) -> PrecisionChoice:
    """Resolve ``--precision``; ``encode(precision)`` returns the probe batch's states.

    An explicit bf16/fp16 is taken as asked, its deviation recorded; ``auto`` decides as the
    module docstring says. Nothing is encoded for float32 on the CPU.
    """
    if requested not in PRECISIONS:
        raise DeviceError(f"unknown precision {requested!r}; expected {', '.join(PRECISIONS)}")
    if requested == "fp32" or (requested == "auto" and device.type != "cuda"):
        return PrecisionChoice("fp32")
    reference = encode("fp32")
    candidates = [requested] if requested != "auto" else list(AUTOCAST_TYPES)
    deviations = {name: state_deviation(reference, encode(name)) for name in candidates}
    if requested != "auto":
        return PrecisionChoice(requested, deviations)
    best = min(deviations, key=deviations.__getitem__)
    chosen = best if deviations[best] <= AUTOCAST_TOLERANCE else "fp32"
    return PrecisionChoice(chosen, deviations)
