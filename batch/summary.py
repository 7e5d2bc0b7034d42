"""``ser-batch summarize``: what a report says, as a table and optionally a picture."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.batch.report import read_report, report_format
from ser.errors import SerError

BINS = np.linspace(0.0, 1.0, 11)


@dataclass(frozen=True)
class ReportSummary:
    labels: list[tuple[str, int]]
    confidence_counts: list[int]
    ok: int
    failed: int
    audio_h: float

    def table(self) -> str:
        lines = [f"files: {self.ok} ok, {self.failed} failed; audio: {self.audio_h:.2f} h", "",
                 "label        files  share"]  # fmt: skip
        for label, count in self.labels:
            lines.append(f"{label:<12} {count:>5}  {count / max(self.ok, 1):>5.1%}")
        lines += ["", "confidence   files"]
        for low, high, count in zip(BINS[:-1], BINS[1:], self.confidence_counts, strict=True):
            lines.append(f"{low:.1f}-{high:.1f}      {count:>5}")
        return "\n".join(lines)


def summarize_report(path: Path) -> ReportSummary:
    rows = read_report(path, report_format(str(path)))
    if not rows or "label" not in rows[0]:
        raise SerError(f"{path}: not a ser-batch report (no rows with a label column)")
    ok = [row for row in rows if row.get("status") == "ok"]
    confidences = np.array([float(row["confidence"]) for row in ok], dtype=float)
    counts, _ = np.histogram(confidences, bins=BINS)
    audio_s = sum(float(row["duration_s"]) for row in ok if row.get("duration_s"))
    return ReportSummary(
        labels=Counter(row["label"] for row in ok).most_common(),
        confidence_counts=counts.tolist(),
        ok=len(ok),
        failed=len(rows) - len(ok),
        audio_h=audio_s / 3600,
    )


def plot_summary(summary: ReportSummary, path: Path) -> None:
    """Bar charts of labels and confidences (needs matplotlib: the ``plot`` or ``train`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SerError("--plot needs matplotlib: pip install 'ser-toolkit[plot]'") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [label for label, _ in summary.labels]
    left.bar(names, [count for _, count in summary.labels], color="tab:blue")
    left.set(title="labels", ylabel="files")
    left.tick_params(axis="x", rotation=45)
    right.bar(BINS[:-1], summary.confidence_counts, width=0.1, align="edge", color="tab:orange")
    right.set(title="confidence", xlabel="confidence of the chosen label", ylabel="files")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
