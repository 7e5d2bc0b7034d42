"""``ser-export``: trained checkpoints to ONNX, each checked against its original first."""

from __future__ import annotations

from pathlib import Path

import click

from ser.clitools import CONTEXT_SETTINGS, UserError, examples, one_line_errors, version_option


@click.group(
    context_settings=CONTEXT_SETTINGS,
    epilog=examples(
        "ser-export forest --model runs/forest -o forest.onnx",
        "ser-export neural --checkpoint runs/whisper-pooled -o model.onnx --data corpus.csv",
        "ser-export check model.onnx --checkpoint runs/whisper-pooled --data corpus.csv",
    ),
)
@version_option
def main() -> None:
    """Export trained models to ONNX with their labels, sample rate and window inside."""


_output_option = click.option(
    "-o", "--output", required=True, type=click.Path(path_type=Path), help="The .onnx file."
)


@main.command(
    epilog=examples(
        "ser-export forest --model runs/forest -o forest.onnx",
        "ser-export check forest.onnx --model runs/forest     # the gates again, later",
    )
)
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder written by ser-train forest.",
)
@_output_option
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
    "(and speaker mode) is judged on its validation clips. Without it, parity uses generated "
    "audio.",
)


@main.command(
    epilog=examples(
        "ser-export neural --checkpoint runs/whisper-pooled -o model.onnx --data corpus.csv",
        "ser-export neural --checkpoint runs/whisper-pooled -o int8.onnx --data corpus.csv \\",
        "    --quantize int8",
    )
)
@_checkpoint_option
@_output_option
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


@main.command(
    epilog=examples(
        "ser-export requantize old.onnx -o model.onnx --data ../shared/data/ravdess-speech-16k",
        "ser-export requantize old.onnx -o cuda.onnx --data corpus.csv --precision float32",
    )
)
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
    """Rewrite an older ser MODEL.onnx (0.1.0's dynamic int8) as a batch-invariant graph,
    without its checkpoint."""
    from ser.export.requantize import requantize as rewrite

    result = rewrite(model, output, validation_clips=_validation_clips(data), precision=precision)
    size_mb = output.stat().st_size / 1e6
    click.echo(f"batch invariance ok: {result.invariance}\nwrote {output} ({size_mb:.1f} MB)")


@main.command(
    epilog=examples(
        "ser-export check model.onnx --checkpoint runs/whisper-pooled --data corpus.csv",
        "ser-export check model.onnx --checkpoint runs/whisper-pooled   # generated audio",
        "ser-export check forest.onnx --model runs/forest",
    )
)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A neural MODEL: the folder written by ser-train neural that it was exported from.",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A forest MODEL: the folder written by ser-train forest that it was exported from.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="With --checkpoint: a corpus (RAVDESS folder or manifest) whose test clips, all of "
    "them, the check runs on (default: 16 generated signals).",
)
@one_line_errors
def check(model: Path, checkpoint: Path | None, model_dir: Path | None, data: Path | None) -> None:
    """Run the export gates again on a written MODEL.onnx: parity and batch invariance.

    A neural model is compared with its PyTorch checkpoint on the test clips of --data (else on
    generated audio); a forest with its scikit-learn model on the test features saved at
    training. Batch invariance: the same inputs scored alone and in shuffled batches.
    """
    if (checkpoint is None) == (model_dir is None):
        raise click.UsageError(
            "give the folder MODEL was exported from: --checkpoint (neural) or --model (forest)"
        )
    frontend = _exported_frontend(model)
    if model_dir is not None:
        if frontend != "egemaps":
            raise UserError(f"{model}: a {frontend} (neural) model; check it with --checkpoint")
        if data is not None:
            raise click.UsageError("--data is for neural models; a forest is checked on the "
                                   "test features saved in --model")  # fmt: skip
        from ser.export.forest import check_forest

        gates = check_forest(model, model_dir)
        parity, invariance = gates.parity, gates.invariance
    else:
        if frontend != "waveform":
            raise UserError(f"{model}: an {frontend} forest; check it with --model")
        from ser.export.neural import check_exported

        parity, invariance = check_exported(model, checkpoint, parity_clips=_parity_clips(data))
    click.echo(f"parity ok: {parity}\nbatch invariance ok: {invariance}")


def _exported_frontend(path: Path) -> str:
    """The frontend an exported model's metadata declares (``egemaps`` or ``waveform``)."""
    from ser.export.onnx_io import load_onnx, read_metadata

    return read_metadata(load_onnx(path, external_data=False)).frontend


@main.command(
    epilog=examples(
        "ser-export speaker --model models/whisper-pooled.onnx --checkpoint runs/speaker \\",
        "    -o speaker.onnx --data ../shared/data/ravdess-speech-16k",
    )
)
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An exported neural model (ser-export neural) with the checkpoint's encoder and window.",
)
@_checkpoint_option
@_output_option
@_data_option
@click.option(
    "--min-items",
    type=click.IntRange(min=1),
    default=None,
    help="Windows a speaker needs before ser-batch normalises it [default: 30, chosen on "
    "validation].",
)
@click.option(
    "--min-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds of audio a speaker needs likewise [default: 0].",
)
@one_line_errors
def speaker(
    model_path: Path,
    checkpoint: Path,
    output: Path,
    data: Path | None,
    min_items: int | None,
    min_seconds: float | None,
) -> None:
    """Add the speaker-normalised heads of a checkpoint (ser-train neural --normalize speaker)
    to an exported model: one encoder pass feeds both heads; the plain outputs are unchanged."""
    from ser.export.speaker import describe, export_speaker

    exported = export_speaker(
        model_path, checkpoint, output, parity_clips=_parity_clips(data),
        validation_clips=_validation_clips(data), min_items=min_items, min_seconds=min_seconds,
    )  # fmt: skip
    click.echo(f"parity ok: {describe(exported.parity)}")
    if exported.accuracy is not None:
        accuracy = exported.accuracy
        click.echo(
            f"speaker-mode validation accuracy ({accuracy.clips} clips, each speaker by its own "
            f"clips): {accuracy.onnx:.4f} with the graph, {accuracy.torch:.4f} with PyTorch"
        )
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


@main.command(
    epilog=examples(
        "ser-export ensemble runs/multi.onnx models/whisper-pooled.onnx -o ensemble.onnx \\",
        "    --data ../shared/data/ravdess-speech-16k --data ../shared/data/nemo-16k/manifest.csv",
    )
)
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@_output_option
@click.option(
    "--weight", "weights", type=float, multiple=True,
    help="One per model, in order (default: equal); the probabilities' weighted mean.",
)  # fmt: skip
@click.option(
    "--data", "corpora", multiple=True, type=click.Path(exists=True, path_type=Path),
    help="Corpora (repeat): parity runs on the first one's test clips; the temperature is "
    "fitted, and each member's accuracy on the shared encoder checked, on all their "
    "validation clips.",
)  # fmt: skip
@one_line_errors
def ensemble(
    models: tuple[Path, ...], output: Path, weights: tuple[float, ...], corpora: tuple[Path, ...]
) -> None:
    """Exported neural models as one graph: every member runs the first one's encoder (once),
    their probabilities are averaged, and a temperature is fitted on validation."""
    from ser.export.ensemble import export_ensemble

    exported = export_ensemble(
        models, output, weights=weights or None,
        parity_clips=_parity_clips(corpora[0] if corpora else None),
        validation_clips=[clip for data in corpora for clip in _validation_clips(data)],
    )  # fmt: skip
    click.echo(f"parity ok: max |dp| = {exported.parity:.2e}")
    click.echo(f"batch invariance ok: {exported.invariance}")
    for check, replaced in zip(exported.members, exported.replaced, strict=False):
        click.echo(
            f"{check.name}: validation accuracy {check.own:.4f} on its own encoder, "
            f"{check.shared:.4f} on the shared one ({replaced} encoder weights replaced)"
        )
    if exported.temperature != 1.0:
        click.echo(f"temperature {exported.temperature:.3f} (fitted on validation)")
    click.echo(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")


def _parity_clips(data: Path | None) -> list:
    """Every test clip of ``data`` (every clip if it has no test split), as the README says."""
    if data is None:
        return []
    from ser.corpus import load_corpus, select

    clips = load_corpus(data)
    return select(clips, "test") or clips


def _validation_clips(data: Path | None) -> list:
    if data is None:
        return []
    from ser.corpus import load_corpus, select

    return select(load_corpus(data), "validation")
