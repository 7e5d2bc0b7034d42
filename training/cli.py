"""``ser-train``: train the eGeMAPS forest or a frozen-encoder neural model on a corpus."""

from __future__ import annotations

from pathlib import Path

import click

from ser.clitools import CONTEXT_SETTINGS, examples, one_line_errors, version_option
from ser.corpus import load_corpora, load_corpus
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


@click.group(
    context_settings=CONTEXT_SETTINGS,
    epilog=examples(
        "ser-train forest --data ../shared/data/ravdess-speech-16k --out runs/forest",
        "ser-train neural --data corpus.csv --out runs/whisper --backbone ./whisper-tiny.en",
    ),
)
@version_option
def main() -> None:
    """Train speech emotion models (speaker-independent split: actors 1-20/21-22/23-24)."""


@main.command(
    epilog=examples(
        "ser-train forest --data ../shared/data/ravdess-speech-16k --out runs/forest",
        "ser-train forest --data corpus.csv --out runs/forest --cache-dir /scratch/ser-cache",
    )
)
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


@main.command(
    epilog=examples(
        "ser-train neural --data ../shared/data/ravdess-speech-16k --out runs/whisper-pooled \\",
        "    --backbone ../shared/models/whisper-tiny.en --ensemble 3",
        "ser-train neural --data ../shared/data/ravdess-speech-16k \\",
        "    --data ../shared/data/nemo-16k/manifest.csv --views 4 --views 2 --out runs/multi",
        "ser-train neural --data corpus.csv --out runs/w2v --views 2 --cache-dir /scratch/cache",
        "HF_HUB_OFFLINE=1 ser-train neural --data corpus.csv --out runs/w2v   # cached hub id",
    )
)
@click.option(
    "--data",
    "data",
    required=True,
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A RAVDESS folder (Actor_XX/...) or a CSV manifest with path,label[,speaker][,split]; "
    "repeat for several corpora, each with its own splits and classes.",
)
@_out_option
@_cache_option
@click.option(
    "--backbone",
    default="facebook/wav2vec2-base",
    show_default=True,
    help="Hugging Face id or local folder of a speech encoder (wav2vec2/HuBERT/WavLM/Whisper).",
)
@click.option(
    "--head", type=click.Choice(["pooled", "reference"]), default="pooled", show_default=True
)
@click.option(
    "--layers",
    type=click.Choice(["weighted", "last"]),
    default="weighted",
    show_default=True,
    help="Learned softmax-weighted sum of all layers, or the last layer.",
)
@click.option("--window", "window_s", default=4.0, show_default=True, help="Window in seconds.")
@click.option("--epochs", default=20, show_default=True)
@click.option("--batch-size", default=32, show_default=True)
@click.option("--lr", "learning_rate", default=1e-3, show_default=True)
@click.option(
    "--views",
    default=(4,),
    multiple=True,
    type=click.IntRange(min=1),
    show_default=True,
    help="Cached training views per clip: once for every corpus, or once per --data in order.",
)
@click.option("--augment/--no-augment", default=True, show_default=True)
@click.option(
    "--augment-background",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of training views given a room background (coloured noise, sometimes mains "
    "hum) 5-35 dB under the speech; 0: none.",
)
@click.option(
    "--frame-dropout",
    default=0.3,
    show_default=True,
    help="pooled head: share of frames left out of the pooling at each training step.",
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--ensemble",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Heads to train (seeds SEED, SEED+1, ...); their probabilities are averaged.",
)
@click.option(
    "--whisper-pad-30s/--no-whisper-pad-30s",
    default=False,
    show_default=True,
    help="Pad windows to Whisper's 30 s context (slower; see README).",
)
@click.option(
    "--whisper-dynamic-range",
    "whisper_dynamic_range_db",
    type=click.FloatRange(20.0, 200.0),  # backbones.DYNAMIC_RANGE_LIMITS_DB (torch-free here)
    default=80.0,
    show_default=True,
    help="Whisper encoders: dB of log-mel kept under each window's peak (Whisper's 80); "
    "narrower hides quiet background under the speech (see README).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the encoder and the head run; auto: CUDA when PyTorch sees a GPU.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Encoder arithmetic; auto: float32 on CPU, on CUDA bf16/fp16 autocast if its states "
    "stay within tolerance of float32 on a probe batch (see README).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads decoding and augmenting clips ahead of the encoder (default: 1 on CPU, "
    "up to 8 on CUDA).",
)
@click.option(
    "--loss",
    type=click.Choice(["plain", "restricted"]),
    default="plain",
    show_default=True,
    help="plain: cross-entropy over every class; restricted: softmax over each clip's corpus "
    "label set (a corpus without calm teaches nothing about calm). Same for one full corpus.",
)
@click.option(
    "--sampling",
    type=click.Choice(["class-corpus", "corpus-class", "class"]),
    default="class-corpus",
    show_default=True,
    help="Balanced draws: class then corpus, corpus then class, or class over pooled corpora.",
)
@click.option(
    "--recording-norm",
    type=click.Choice(["none", "mean", "standardize"]),
    default="none",
    show_default=True,
    help="pooled head: normalise each window's encoder states by its own statistics.",
)
@click.option(
    "--samples-per-epoch",
    type=click.IntRange(min=1),
    default=None,
    help="Clips drawn per epoch (default: 1.5 x the largest class count x the classes, over "
    "all corpora); fix it to train several corpora for the same number of steps as one.",
)
@click.option(
    "--calibrate/--no-calibrate",
    default=True,
    show_default=True,
    help="Fit a temperature on validation and keep it in the model.",
)
@click.option(
    "--pool",
    type=click.Choice(["all", "speech"]),
    default="all",
    show_default=True,
    help="pooled head: average over every frame of the window (all), or over the frames a "
    "gate fitted to Silero VAD marks as speech, so a background in the pauses moves nothing.",
)
@click.option(
    "--normalize",
    type=click.Choice(["none", "speaker"]),
    default="none",
    show_default=True,
    help="speaker: also train heads on states centred by each speaker's mean (the manifest's "
    "speaker column), for ser-batch --speaker-from/--speakers. The plain heads are kept.",
)
@click.option(
    "--speaker-bottleneck",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Channels per frame the speaker heads normalise (what ser-batch caches per frame).",
)
@one_line_errors
def neural(
    data: tuple[Path, ...], out: Path, cache_dir: Path | None, views: tuple[int, ...], **options
) -> None:
    """A frozen speech encoder with a trained classification head."""
    from ser.training.neural import NeuralConfig, train_neural

    config = NeuralConfig(views=views[0] if len(views) == 1 else views, **options)
    run = train_neural(load_corpora(data), out, cache_dir or default_cache_dir(), config)
    parts = [
        f"{split} accuracy={scores['accuracy']:.4f} UAR={scores['uar']:.4f}"
        for split, scores in run.metrics.items()
        if split in ("validation", "test")
    ]
    corpora = run.metrics["corpora"]
    if len(corpora) > 1:
        parts += [
            f"{name} {split} accuracy={score['accuracy']:.4f} UAR={score['uar']:.4f}"
            for name, scores in corpora.items()
            for split, score in scores.items()
            if split in ("validation", "test")
        ]
    speaker = run.metrics.get("speaker")
    if speaker is not None:
        parts += [
            f"speaker-normalised {split} accuracy={speaker[split]['accuracy']:.4f} "
            f"UAR={speaker[split]['uar']:.4f}"
            for split in ("validation", "test")
            if split in speaker
        ]
    temperature = run.metrics["calibration"]["temperature"]
    click.echo(
        f"{'; '.join(parts)}; best epoch {run.metrics['best_epoch']}; temperature "
        f"{temperature:.3f} -> {run.out_dir}"
    )
