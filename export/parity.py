"""The gate every export passes: the ONNX graph must agree with the model it came from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser.errors import SerError


class ParityError(SerError):
    """The exported graph disagrees with its source model beyond the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """How closely two sets of class probabilities agree."""

    n: int
    max_abs_diff: float
    argmax_mismatches: int
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.argmax_mismatches == 0 and self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        return (
            f"{self.n} inputs: max |p_onnx - p_source| = {self.max_abs_diff:.2e} "
            f"(tolerance {self.tolerance:.0e}), argmax mismatches {self.argmax_mismatches}"
        )


def compare_probabilities(source: np.ndarray, onnx: np.ndarray, tolerance: float) -> ParityReport:
    """Compare ``[n, classes]`` probabilities.

    An argmax differs only where the ONNX choice is not also a top class of the source within
    the tolerance: exact ties (frequent in forests) may break either way without being wrong.
    """
    source, onnx = np.asarray(source, np.float64), np.asarray(onnx, np.float64)
    if source.shape != onnx.shape:
        raise ParityError(f"output shapes differ: source {source.shape}, onnx {onnx.shape}")
    chosen = onnx.argmax(axis=1)
    gap = source.max(axis=1) - source[np.arange(len(source)), chosen]
    return ParityReport(
        n=len(source),
        max_abs_diff=float(np.abs(source - onnx).max()) if source.size else 0.0,
        argmax_mismatches=int((gap > tolerance).sum()),
        tolerance=tolerance,
    )


def require_parity(report: ParityReport, what: str) -> ParityReport:
    """Raise ParityError with the figures unless ``report`` is within tolerance."""
    if not report.ok:
        raise ParityError(f"{what}: ONNX disagrees with the original model: {report}")
    return report
