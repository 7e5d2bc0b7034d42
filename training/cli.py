"""``ser-train``: train the eGeMAPS forest or a frozen-encoder neural model on a corpus."""

from __future__ import annotations

from pathlib import Path

import click

from ser.clitools import one_line_errors, version_option
from ser.corpus import load_corpus
from ser.training.cache import default_cache_dir

_data_option = click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A RAVDESS folder (Actor_XX/...) or a CSV manifest with path,label[,speaker][,split].",
)
_out_option = click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Folder for the trained model."
)
_cache_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Feature cache (default: $SER_CACHE_DIR or ~/.cache/ser).",
)


@click.group()
@version_option
def main() -> None:
    """Train speech emotion models (speaker-independent split: actors 1-20/21-22/23-24)."""


@main.command()
@_data_option
@_out_option
@_cache_option
@click.option("--seed", default=0, show_default=True, help="Random seed of the forest.")
@one_line_errors
def forest(data: Path, out: Path, cache_dir: Path | None, seed: int) -> None:
    """RandomForest over openSMILE eGeMAPS features, fitted on train+validation."""
    from ser.training.forest import train_forest

    run = train_forest(load_corpus(data), out, cache_dir or default_cache_dir(), seed=seed)
    click.echo(
        f"min_samples_leaf={run.min_samples_leaf} test accuracy={run.metrics['accuracy']:.4f} "
        f"UAR={run.metrics['uar']:.4f} -> {run.out_dir}"
    )
