"""``ser-batch summarize``: what a report says, as a table and optionally a picture."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.batch.report import known_format, read_report
from ser.errors import SerError

BINS = np.linspace(0.0, 1.0, 11)
# Columns every ser-batch report has (a --segments file lacks status: it has no failed files).
REPORT_COLUMNS = ("path", "label", "confidence", "status")


@dataclass(frozen=True)
class ReportSummary:
    labels: list[tuple[str, int]]
    confidence_counts: list[int]
    ok: int
    failed: int
    audio_h: float
    no_speech: int = 0

    def table(self) -> str:
        silent = f", {self.no_speech} without speech" if self.no_speech else ""
        lines = [f"files: {self.ok} ok{silent}, {self.failed} failed; audio: {self.audio_h:.2f} h",
                 "", "label        files  share"]  # fmt: skip
        for label, count in self.labels:
            lines.append(f"{label:<12} {count:>5}  {count / max(self.ok, 1):>5.1%}")
        lines += ["", "confidence   files"]
        for low, high, count in zip(BINS[:-1], BINS[1:], self.confidence_counts, strict=True):
            lines.append(f"{low:.1f}-{high:.1f}      {count:>5}")
        return "\n".join(lines)


def summarize_report(path: Path) -> ReportSummary:
    """Count a report's labels and confidences.

    Raises:
        SerError: in one line, when ``path`` is not a report written by ``ser-batch score``.
    """
    fmt = known_format(path) or "csv"  # another extension: read as CSV, refused below
    try:
        rows = read_report(path, fmt)
    except SerError:
        raise
    except Exception as error:  # what the reader chokes on (JSON, Unicode, Arrow, ragged CSV)
        reason = " ".join(str(error).split())[:120] if isinstance(error, ValueError) else ""
        detail = f": {reason}" if reason else ""
        raise SerError(
            f"{path}: not a ser-batch report (cannot be read as {fmt}{detail})"
        ) from None
    if not rows:
        raise SerError(f"{path}: no rows (an empty report, or not a ser-batch report)")
    columns = set(rows[0]) if isinstance(rows[0], dict) else set()
    missing = [column for column in REPORT_COLUMNS if column not in columns]
    if missing:
        segments = {"start_s", "end_s"} <= columns
        why = "a --segments file: one row per window" if segments else f"no {', '.join(missing)}"
        raise SerError(
            f"{path}: not a ser-batch report ({why}); summarize reads what ser-batch score -o wrote"
        )
    ok = [row for row in rows if row.get("status") == "ok"]
    confidences = np.array([float(row["confidence"]) for row in ok], dtype=float)
    counts, _ = np.histogram(confidences, bins=BINS)
    audio_s = sum(float(row["duration_s"]) for row in ok if row.get("duration_s"))
    return ReportSummary(
        labels=Counter(row["label"] for row in ok).most_common(),
        confidence_counts=counts.tolist(),
        ok=len(ok),
        failed=sum(row.get("status") not in ("ok", "no_speech") for row in rows),
        audio_h=audio_s / 3600,
        no_speech=sum(row.get("status") == "no_speech" for row in rows),
    )


def prepare_plot(path: Path) -> None:
    """Check everything a plot needs before anything is printed, and create its folder.

    Raises:
        SerError: matplotlib is missing, ``path`` has no extension matplotlib writes, or its
            folder cannot be created.
    """
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = sorted(FigureCanvasBase.get_supported_filetypes())
    if path.suffix.lower().lstrip(".") not in kinds:
        raise SerError(f"--plot {path}: name a picture file ending in .{', .'.join(kinds)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SerError(f"--plot {path}: cannot create {path.parent} ({error.strerror})") from None


def plot_summary(summary: ReportSummary, path: Path) -> None:
    """Bar charts of labels and confidences (needs matplotlib: the ``plot`` or ``train`` extra)."""
    prepare_plot(path)
    plt = _pyplot()
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


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SerError("--plot needs matplotlib: pip install 'ser-toolkit[plot]'") from None
    return plt
