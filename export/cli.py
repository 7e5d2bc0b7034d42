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

    exported = export_forest(model_dir, output)
    click.echo(
        f"parity ok: {exported.parity}\nbatch invariance ok: {exported.invariance}\nwrote {output}"
    )


_checkpoint_option = click.option(
    "--checkpoint",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder written by ser-train neural.",
)
_data_option = click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Corpus (RAVDESS folder or manifest): parity runs on its test clips, and --quantize "
    "is judged on its validation clips. Without it, parity uses generated audio.",
)


@main.command()
@_checkpoint_option
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="The .onnx file."
)
@_data_option
@click.option("--optimize", is_flag=True, help="Apply ONNX Runtime graph optimisations offline.")
@click.option(
    "--quantize",
    type=click.Choice(["int8"]),
    default=None,
    help="int8 matrix-multiplication weights, activations quantised per row (batch-invariant); "
    "refused if validation accuracy drops > 1 point.",
)
@click.option(
    "--fp16",
    is_flag=True,
    help="Float16 weights and arithmetic for CUDA; refused if validation accuracy drops > 1 point.",
)
@one_line_errors
def neural(
    checkpoint: Path,
    output: Path,
    data: Path | None,
    optimize: bool,
    quantize: str | None,
    fp16: bool,
) -> None:
    """Encoder and head as one graph: 16 kHz audio in, logits and probabilities out."""
    from ser.export.neural import export_neural

    validation = _validation_clips(data) if quantize or fp16 else []
    exported = export_neural(
        checkpoint,
        output,
        parity_clips=_parity_clips(data),
        optimize=optimize,
        quantize=quantize == "int8",
        fp16=fp16,
        validation_clips=validation,
    )
    size_mb = output.stat().st_size / 1e6
    click.echo(
        f"parity ok: {exported.parity}\nbatch invariance ok: {exported.invariance}\n"
        f"wrote {output} ({size_mb:.1f} MB)"
    )


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="The new .onnx file."
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Corpus whose validation clips judge accuracy against the old file.",
)
@click.option(
    "--precision",
    type=click.Choice(["int8", "float32"]),
    default="int8",
    show_default=True,
    help="int8 with per-row activations (CPU), or float32 (CUDA).",
)
@one_line_errors
def requantize(model: Path, output: Path, data: Path, precision: str) -> None:
    """Make a dynamic-int8 MODEL.onnx from an older ser batch-invariant, without its checkpoint."""
    from ser.export.requantize import requantize as rewrite

    result = rewrite(model, output, validation_clips=_validation_clips(data), precision=precision)
    size_mb = output.stat().st_size / 1e6
    click.echo(f"batch invariance ok: {result.invariance}\nwrote {output} ({size_mb:.1f} MB)")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_checkpoint_option
@_data_option
@one_line_errors
def check(model: Path, checkpoint: Path, data: Path | None) -> None:
    """Compare an exported MODEL.onnx with its PyTorch checkpoint; check batch invariance."""
    from ser.export.neural import check_exported

    parity, invariance = check_exported(model, checkpoint, parity_clips=_parity_clips(data))
    click.echo(f"parity ok: {parity}\nbatch invariance ok: {invariance}")


def _parity_clips(data: Path | None) -> list:
    if data is None:
        return []
    from ser.corpus import load_corpus, select

    clips = load_corpus(data)
    return (select(clips, "test") or clips)[:64]


def _validation_clips(data: Path | None) -> list:
    if data is None:
        return []
    from ser.corpus import load_corpus, select

    return select(load_corpus(data), "validation")
