"""``ser-batch``: score folders of audio into a report with an exported ONNX model.

Exit statuses: listed in :data:`SCORE_EPILOG`, which ``ser-batch score -h`` prints.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ser.batch.frontends import check_hop
from ser.batch.segmentation import (
    DEFAULT_SEGMENTATION,
    SEGMENTATIONS,
    SENTENCE_PAUSE_S,
    Segmentation,
)
from ser.clitools import CONTEXT_SETTINGS, examples, one_line_errors, version_option
from ser.models import DEFAULT_MODEL

EXIT_OK, EXIT_USAGE, EXIT_FILES_FAILED, EXIT_LOCKED = 0, 2, 3, 4
EXIT_OUTPUT_FAILED, EXIT_INPUTS = 5, 6
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """A stop signal arrived; a BaseException, so that no per-file handler swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# The end of `ser-batch score -h`: examples, then one line per exit status, in numeric order.
SCORE_EPILOG = (
    examples(
        "ser-batch score ./calls more.wav -o report.csv",
        "ser-batch score ./calls -o calls.csv --incremental      # the nightly cron job",
        "find /nas -name '*.m4a' | ser-batch score --files-from - -o r.jsonl",
    )
    + """

\b
Exit status:
  0    every file scored
  1    an unexpected crash
  2    a usage, model or output error (nothing scored)
  3    some files failed (their rows say why)
  4    another run holds this report's lock
  5    writing failed during the run (a full disk, the report's folder removed)
  6    an input yielded no files, or the run would drop over half of the report's rows
  130  stopped by SIGINT (Ctrl-C)
  143  stopped by SIGTERM
"""
)


def _vad_option(flag: str, default: float, help: str, minimum: float = 0) -> Callable:
    """A ``--vad-*`` option in seconds (or a rate), its default from :class:`Segmentation`."""
    return click.option(
        flag, type=click.FloatRange(min=minimum), default=default, show_default=True, help=help
    )


@click.group(
    context_settings=CONTEXT_SETTINGS,
    epilog=examples(
        "ser-batch score ./audio -o report.csv",
        "ser-batch score ./calls -o calls.csv --incremental",
        "ser-batch summarize report.csv --plot plots/report.png",
    ),
)
@version_option
def main() -> None:
    """Score audio files with speech emotion models exported by ser-export."""


@main.command(epilog=SCORE_EPILOG)
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))  # s3:// kept whole
@click.option(
    "-o", "--output", required=True, help="Report file (.csv, .jsonl, .parquet), or - for stdout."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "parquet"]),
    default=None,
    help="Report format, whatever the output's name [default: from its extension, .csv, .jsonl "
    "(.ndjson) or .parquet; csv without one; another extension is an error].",
)
@click.option(
    "--model",
    default=DEFAULT_MODEL,
    show_default=True,
    help="A shipped model's name or a path to a .onnx file exported by ser-export.",
)
@click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime threads.")
@click.option(
    "--hop",
    type=float,
    default=None,
    callback=lambda _ctx, _param, value: _hop(value),
    help="Window hop in seconds.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Model inputs (windows) per inference call, gathered across files.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads decoding and resampling ahead of inference [default: 2; 4 on CUDA].",
)
@click.option(
    "--segmentation",
    type=click.Choice(SEGMENTATIONS),
    default=DEFAULT_SEGMENTATION,
    show_default=True,
    help="vad: score only the speech that Silero VAD finds, utterance by utterance (a file "
    "without speech gets status no_speech); windows: fixed windows over the whole file.",
)
@click.option(
    "--vad-threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=Segmentation.threshold,
    show_default=True,
    help="Speech probability that starts a region (it ends below this minus 0.15).",
)
@_vad_option(
    "--vad-min-speech",
    Segmentation.min_speech_s,
    "Seconds: shorter speech regions are dropped.",
)
@_vad_option(
    "--vad-min-silence",
    Segmentation.min_silence_s,
    "Seconds: shorter pauses are merged into the region around them.",
)
@_vad_option(
    "--vad-max-speech",
    Segmentation.max_speech_s,
    "Seconds: longer regions are split at their longest pause.",
    minimum=1,
)
@_vad_option(
    "--vad-pad",
    Segmentation.pad_s,
    "Seconds added to both ends of each speech region.",
)
@_vad_option(
    "--vad-context",
    Segmentation.context_s,
    "Seconds of the recording around a short region that the model sees with it (at most "
    "to the middle of the pause; zero-padded beyond).",
)
@_vad_option(
    "--vad-refresh",
    Segmentation.refresh_s,
    "0, or at least 1: seconds between restarts of each of the VAD's two states, half a "
    "period apart (one state drifts over long recordings and misses speech); 0: one state "
    "through the whole file.",
)
@click.option(
    "--vad-sentence-pause",
    type=click.FloatRange(min=0),
    default=None,
    help=f"Seconds: neighbouring regions closer than this that fit one model window together, "
    f"one shorter than --vad-sentence-part, are scored as one sentence (each keeps its own "
    f"row, with the sentence's scores); 0: each region alone. [default: {SENTENCE_PAUSE_S:g} "
    f"for a model that pools over speech only (whisper-gated-rooms), else 0; 0 in speaker "
    f"mode]",
)
@_vad_option(
    "--vad-sentence-part",
    Segmentation.sentence_part_s,
    "Seconds: only a pair in which one region is shorter than this is joined; 0: any pair.",
)
@click.option(
    "--segments",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write one row per utterance (vad) or window (windows): path, start_s, end_s, "
    "label, confidence, p_*; in the format its own extension names (as -o's, --format aside).",
)
@click.option("--files-from", default=None, help="Read more input paths from a file (- stdin).")
@click.option("--include", multiple=True, help="Glob of files to take from directories.")
@click.option("--exclude", multiple=True, help="Glob of files or directories to skip.")
@click.option(
    "--incremental",
    is_flag=True,
    help="Keep rows of unchanged files (same path, size, mtime, model); score only the rest.",
)
@click.option(
    "--keep-removed",
    is_flag=True,
    help="With --incremental, keep rows of files that no longer exist (default: drop them).",
)
@click.option(
    "--allow-shrink",
    is_flag=True,
    help="With --incremental, allow dropping more than half of the report's rows in one run.",
)
@click.option(
    "--sessions",
    type=click.IntRange(min=1),
    default=None,
    help="ONNX Runtime sessions fed whole batches in parallel, the --threads split among them "
    "[default: one per core, at most 8; one on CUDA]; with --engine ray, actors of one session "
    "each [default: one per CPU of the cluster, per GPU with --device cuda].",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Score in this process, or on a Ray cluster (needs the ray extra); the report is the "
    "same.",
)
@click.option(
    "--ray-address",
    default=None,
    help="With --engine ray: 'auto' or a cluster's address [default: a local Ray instance].",
)
@click.option(
    "--speaker-from",
    type=click.Choice(["folder"]),
    default=None,
    help="Speaker mode: the parent folder names each file's speaker; each voice is judged "
    "against its own baseline (a model exported with a speaker head).",
)
@click.option(
    "--speakers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Speaker mode from a path,speaker CSV, or an RTTM diarization (.rttm): each window "
    "or speech region goes to the speaker whose turns cover most of it.",
)
@click.option(
    "--speaker-min-items",
    type=click.IntRange(min=1),
    default=None,
    help="Speaker mode: items (windows) a speaker needs before its rows are normalised; with "
    "fewer they use the plain head and say so [default: the model's, chosen on validation].",
)
@click.option(
    "--speaker-min-seconds",
    type=click.FloatRange(min=0),
    default=None,
    help="Speaker mode: seconds of audio a speaker needs likewise [default: the model's].",
)
@click.option(
    "--speaker-stats",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Speaker mode: where each speaker's statistics are written [default: REPORT"
    ".speakers.json].",
)
@click.option(
    "--freeze-speaker-stats",
    is_flag=True,
    help="Speaker mode: use the statistics --speaker-stats holds from an earlier run for its "
    "speakers (new speakers get theirs from this run), so old rows never change.",
)
@one_line_errors
def score(inputs: tuple[str, ...], **options) -> None:
    """Score audio files and folders (recursively) into a report, one row per file."""
    from ser.batch.incremental import ShrinkRefused
    from ser.batch.run import RunOptions, run_scoring
    from ser.batch.runlock import RunLocked
    from ser.files import OutputFailed

    if not inputs and not options["files_from"]:
        raise click.UsageError("give files or directories to score, or --files-from")
    try:
        with _stop_signals_raise():
            outcome = run_scoring(list(inputs), RunOptions(**options))
    except RunLocked as error:
        _fail(error, EXIT_LOCKED)
    except OutputFailed as error:
        _fail(error, EXIT_OUTPUT_FAILED)
    except ShrinkRefused as error:
        _fail(error, EXIT_INPUTS)
    except Interrupted as stop:
        kept = "nothing written" if options["output"] == "-" else (
            "the previous report is intact and the files scored so far are kept in its journal "
            "for the next --incremental run"
        )  # fmt: skip
        _fail(f"stopped by {stop}; {kept}", 128 + stop.signum)
    if outcome.empty_inputs:
        sys.exit(EXIT_INPUTS)
    sys.exit(EXIT_FILES_FAILED if outcome.failed else EXIT_OK)


@main.command(
    epilog=examples(
        "ser-batch summarize report.csv",
        "ser-batch summarize calls.parquet --plot plots/calls.png   # creates plots/",
    )
)
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the summary into this picture (.png, .svg, .pdf; needs matplotlib).",
)
@one_line_errors
def summarize(report: Path, plot: Path | None) -> None:
    """Label distribution and confidence histogram of a report, as a table (and a picture)."""
    from ser.batch.summary import plot_summary, prepare_plot, summarize_report

    summary = summarize_report(report)
    if plot is not None:
        prepare_plot(plot)  # a missing matplotlib or a bad target fails before any output
    click.echo(summary.table())
    if plot is not None:
        plot_summary(summary, plot)
        click.echo(f"wrote {plot}")


def _hop(value: float | None) -> float | None:
    """``--hop`` by the frontend's own rule (click's FloatRange lets nan and inf through)."""
    try:
        return check_hop(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _fail(error: object, status: int) -> None:
    click.echo(f"Error: {error}", err=True)
    sys.exit(status)


@contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread.

    The exception unwinds the run like any error: the lock is released, the pid file removed,
    temporary files deleted, the journal kept. A second signal during that cleanup is ignored.
    """

    def stop(signum: int, _frame: object) -> None:
        for number in STOP_SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; an embedding program keeps its own
        return
    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


if __name__ == "__main__":
    main()
