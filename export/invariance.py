"""The gate that keeps reports reproducible: a window's scores must not depend on its batch.

ONNX Runtime runs a graph on whole batches. Most operators treat every row on its own, but some
do not: dynamic int8 quantisation (``DynamicQuantizeLinear``) picks one activation scale for the
whole batch tensor, so a file's probabilities would move with its batch-mates, the batch size and
where a resumed run starts. Every exported model is run here on the same windows alone and in
shuffled batches; the export is refused unless they agree to float32 noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ser.errors import SerError

BATCH_SIZES = (1, 16, 64)
INVARIANCE_TOLERANCE = 1e-5


class InvarianceError(SerError):
    """The graph gives a window other probabilities depending on what else is in its batch."""


@dataclass(frozen=True)
class InvarianceReport:
    """How far probabilities in shuffled batches stray from the same windows scored alone."""

    n: int
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    label_changes: int
    tolerance: float = INVARIANCE_TOLERANCE

    @property
    def ok(self) -> bool:
        return self.label_changes == 0 and self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        sizes = ", ".join(str(size) for size in self.batch_sizes)
        return (
            f"{self.n} windows alone vs shuffled batches of {sizes}: max |dp| = "
            f"{self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e}), "
            f"labels changed {self.label_changes}"
        )


def session_runner(
    model: bytes | str, input_name: str, output_name: str
) -> Callable[..., np.ndarray]:
    """A CPU ONNX Runtime session as ``run(rows, chunk=None) -> probabilities``.

    ``chunk``: at most this many rows per run, for large validation sets; :func:`batch_invariance`
    calls without it, since its batch sizes are the point of the check. One session serves both.
    """
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def run(rows: np.ndarray, chunk: int | None = None) -> np.ndarray:
        rows = rows.astype(np.float32)
        if chunk is None or len(rows) <= chunk:
            return session.run([output_name], {input_name: rows})[0]
        return np.concatenate([run(rows[i : i + chunk]) for i in range(0, len(rows), chunk)])

    return run


def batch_invariance(
    run: Callable[[np.ndarray], np.ndarray],
    inputs: np.ndarray,
    *,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    seed: int = 0,
) -> InvarianceReport:
    """Score every row alone, then in shuffled batches of each size, and compare.

    With fewer rows than the largest batch, the pool is filled with quieter copies of the rows
    (any valid input will do: the question is only whether batch-mates change a row's result).
    """
    pool = _fill(np.asarray(inputs, dtype=np.float32), max(batch_sizes))
    alone = np.concatenate([run(pool[i : i + 1]) for i in range(len(pool))]).astype(np.float64)
    rng = np.random.default_rng(seed)
    worst, changes = 0.0, 0
    for size in batch_sizes:
        order = rng.permutation(len(pool))
        batched = np.empty_like(alone)
        for start in range(0, len(pool), size):
            chosen = order[start : start + size]
            batched[chosen] = run(pool[chosen])
        gap = float(np.abs(batched - alone).max())
        worst = max(worst, gap if np.isfinite(gap) else np.inf)  # NaN scores fail, never hide
        changes += int((batched.argmax(axis=1) != alone.argmax(axis=1)).sum())
    return InvarianceReport(len(pool), tuple(batch_sizes), worst, changes)


def require_invariance(report: InvarianceReport, what: str) -> InvarianceReport:
    """Raise InvarianceError with the figures unless ``report`` passes."""
    if not report.ok:
        raise InvarianceError(
            f"{what}: scores depend on the batch, so reports would not be reproducible: {report}"
        )
    return report


def _fill(rows: np.ndarray, count: int) -> np.ndarray:
    if len(rows) == 0:
        raise ValueError("batch invariance needs at least one input row")
    copies, factor = [rows], 0.8
    while sum(len(part) for part in copies) < count:
        copies.append(rows * factor)
        factor *= 0.8
    return np.concatenate(copies)[: max(count, len(rows))]
