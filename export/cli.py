"""``ser-export``: trained checkpoints to ONNX, each checked against its original first."""

from __future__ import annotations

from pathlib import Path

import click

from ser.clitools import one_line_errors, version_option


@click.group()
@version_option
def main() -> None:
    """Export trained models to ONNX with their labels, sample rate and window inside."""


@main.command()
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder written by ser-train forest.",
)
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="The .onnx file."
)
@one_line_errors
def forest(model_dir: Path, output: Path) -> None:
    """The eGeMAPS RandomForest through skl2onnx (probabilities, no ZipMap)."""
    from ser.export.forest import export_forest

    report = export_forest(model_dir, output)
    click.echo(f"parity ok: {report}\nwrote {output}")
