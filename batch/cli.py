"""``ser-batch``: score folders of audio into a report with an exported ONNX model.

Exit status: 0 every file scored; 3 some files failed (their rows say why); 2 usage, model or
output errors (nothing scored); 1 an unexpected crash.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from tqdm import tqdm

from ser.clitools import one_line_errors, version_option
from ser.models import DEFAULT_MODEL

EXIT_OK, EXIT_USAGE, EXIT_FILES_FAILED = 0, 2, 3


@click.group()
@version_option
def main() -> None:
    """Score audio files with speech emotion models exported by ser-export."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, help="Report file (.csv), or - for standard output.")
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A shipped model's name (forest) or a path to a .onnx file exported by ser-export.",
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads.")
@click.option("--hop", type=click.FloatRange(min=0.01), default=None, help="Window hop in seconds.")
@one_line_errors
def score(
    inputs: tuple[Path, ...],
    output: str,
    model: str,
    device: str,
    threads: int | None,
    hop: float | None,
) -> None:
    """Score audio files and folders (recursively) into a CSV report, one row per file."""
    from ser.batch.discovery import discover
    from ser.batch.frontends import frontend_for
    from ser.batch.report import CsvReport, report_columns, report_row
    from ser.batch.scoring import FileScore, score_file
    from ser.batch.session import ScoringModel

    scorer = ScoringModel(model, device=device, threads=threads)
    frontend = frontend_for(scorer.metadata, hop_s=hop)
    labels = scorer.labels
    report = CsvReport(output, report_columns(labels))
    started, failed, audio_s, total = time.monotonic(), 0, 0.0, 0
    try:
        for found in tqdm(list(discover(inputs)), desc="scoring", unit="file", disable=None):
            if found.error:
                result = FileScore(found.path, error=found.error)
            else:
                result = score_file(found.path, scorer, frontend)
            report.write(report_row(result, labels, scorer.name))
            total += 1
            failed += not result.ok
            audio_s += result.duration_s or 0.0
        report.commit()
    except BaseException:
        report.abort()
        raise
    wall = time.monotonic() - started
    click.echo(
        f"{total - failed} ok, {failed} failed, {audio_s / 3600:.2f} h audio in {wall:.1f} s "
        f"({audio_s / max(wall, 1e-9):.1f}x real time) -> {output}",
        err=True,
    )
    sys.exit(EXIT_FILES_FAILED if failed else EXIT_OK)
