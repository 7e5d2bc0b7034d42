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
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Model inputs (windows) per inference call, gathered across files.",
)
@click.option(
    "--segments",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write one row per window (path, start_s, end_s, label, confidence, p_*).",
)
@one_line_errors
def score(
    inputs: tuple[Path, ...],
    output: str,
    model: str,
    device: str,
    threads: int | None,
    hop: float | None,
    batch_size: int,
    segments: Path | None,
) -> None:
    """Score audio files and folders (recursively) into a CSV report, one row per file."""
    from ser.batch.discovery import discover
    from ser.batch.frontends import frontend_for
    from ser.batch.report import (
        CsvReport,
        report_columns,
        report_row,
        segment_columns,
        segment_rows,
    )
    from ser.batch.scoring import prepare_file, score_prepared
    from ser.batch.session import ScoringModel

    scorer = ScoringModel(model, device=device, threads=threads)
    frontend = frontend_for(scorer.metadata, hop_s=hop)
    labels, rate = scorer.labels, scorer.metadata.sample_rate
    found = list(discover(inputs))
    reports = [CsvReport(output, report_columns(labels))]
    if segments is not None:
        reports.append(CsvReport(str(segments), segment_columns(labels)))
    started, failed, audio_s = time.monotonic(), 0, 0.0
    try:
        prepared = (prepare_file(item, frontend, rate) for item in found)
        results = score_prepared(prepared, scorer, batch_size)
        for result in tqdm(results, total=len(found), desc="scoring", unit="file", disable=None):
            reports[0].write(report_row(result, labels, scorer.name))
            for row in segment_rows(result, labels) if segments is not None else ():
                reports[1].write(row)
            failed += not result.ok
            audio_s += result.duration_s or 0.0
        for report in reports:
            report.commit()
    except BaseException:
        for report in reports:
            report.abort()
        raise
    wall = time.monotonic() - started
    click.echo(
        f"{len(found) - failed} ok, {failed} failed, {audio_s / 3600:.2f} h audio in {wall:.1f} s "
        f"({audio_s / max(wall, 1e-9):.1f}x real time) -> {output}",
        err=True,
    )
    sys.exit(EXIT_FILES_FAILED if failed else EXIT_OK)
