"""One scoring run: check, discover, skip what is done, score the rest, commit rows, report.

Order of safety: everything that can be checked (the outputs, the file list, the model, the
lock, the journal) is checked before any file is scored; rows go to a journal as they are
produced (fsync per row); the report is written to a temporary file and renamed into place only
at the end; the journal is removed only after that. A run stopped at any point (killed, a
signal, a full disk, its folder removed) leaves the previous report intact and its finished
rows in the journal, and the next ``--incremental`` run picks both up.

The scoring itself is an engine's (:mod:`ser.batch.engine`): this process's sessions, or a Ray
cluster's actors (:mod:`ser.batch.ray_engine`); all of the above stays here, in the driver,
whichever engine scores.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ser.batch.discovery import Discovery, Found, discover, read_file_list
from ser.batch.engine import Engine, LocalEngine, RowFormat
from ser.batch.feature_cache import FeatureCache
from ser.batch.frontends import frontend_for
from ser.batch.incremental import Plan, Previous, check_shrink, plan_run, row_key
from ser.batch.journal import Journal, journal_path
from ser.batch.progress import Progress
from ser.batch.provenance import provenance_path, write_provenance
from ser.batch.records import location_from_cell
from ser.batch.report import (
    UsageError,
    check_output,
    report_columns,
    report_format,
    segment_columns,
    write_report,
)
from ser.batch.runlock import HeldLock, run_lock
from ser.batch.segmentation import DEFAULT_SEGMENTATION, Segmentation
from ser.batch.session import SessionPool
from ser.batch.speaker_mode import (
    SPEAKER_SETTING,
    SpeakerHead,
    SpeakerSettings,
    read_stats,
    rescore_by_speaker,
    write_stats,
)
from ser.batch.speakers import SpeakerSource, load_speakers, summarise_problems
from ser.errors import SerError
from ser.files import OutputFailed

__all__ = ["RunOptions", "RunOutcome", "provenance_path", "run_scoring"]
ENGINES = ("local", "ray")

Row = dict[str, str]


@dataclass(frozen=True)
class RunOptions:
    output: str
    fmt: str | None = None
    model: str = "forest"
    device: str = "cpu"
    threads: int | None = None
    hop: float | None = None
    batch_size: int = 16
    workers: int | None = None
    segments: Path | None = None
    files_from: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    incremental: bool = False
    keep_removed: bool = False
    allow_shrink: bool = False
    sessions: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    segmentation: str = DEFAULT_SEGMENTATION
    vad_threshold: float = Segmentation.threshold  # the VAD's defaults live in Segmentation
    vad_min_speech: float = Segmentation.min_speech_s
    vad_min_silence: float = Segmentation.min_silence_s
    vad_max_speech: float = Segmentation.max_speech_s
    vad_pad: float = Segmentation.pad_s
    vad_context: float = Segmentation.context_s
    vad_refresh: float = Segmentation.refresh_s
    vad_sentence_pause: float | None = None  # None: the model's (speaker mode: 0)
    vad_sentence_part: float = Segmentation.sentence_part_s
    speaker_from: str | None = None
    speakers: Path | None = None
    speaker_min_items: int | None = None  # None: the model's default (its metadata)
    speaker_min_seconds: float | None = None
    speaker_stats: Path | None = None  # None: <report>.speakers.json
    freeze_speaker_stats: bool = False

    @property
    def speaker_mode(self) -> bool:
        """Whether the options name who speaks (``--speaker-from`` or ``--speakers``)."""
        return self.speaker_from is not None or self.speakers is not None

    def segmenting(self) -> Segmentation:
        """The segmentation these options ask for (speaker mode's never joins sentences:
        :meth:`Segmentation.alone`).

        Raises:
            UsageError: for impossible VAD settings, saying what is allowed.
        """
        pause = self.vad_sentence_pause
        if pause and self.speaker_mode and self.segmentation == "vad":
            raise UsageError(
                "--vad-sentence-pause must be 0 in speaker mode (--speakers, --speaker-from): a "
                "sentence could join two speakers' turns"
            )
        try:
            segmentation = Segmentation(
                self.segmentation, self.vad_threshold, self.vad_min_speech, self.vad_min_silence,
                self.vad_max_speech, self.vad_pad, self.vad_context, self.vad_refresh,
                pause, self.vad_sentence_part,
            )  # fmt: skip
        except ValueError as error:
            raise UsageError(str(error)) from None
        return segmentation.alone() if self.speaker_mode else segmentation


@dataclass(frozen=True)
class RunOutcome:
    files: int
    scored: int
    reused: int
    failed: int
    empty_inputs: int = 0


def run_scoring(inputs: Sequence[str | Path], options: RunOptions) -> RunOutcome:
    """Score ``inputs`` into ``options.output``; see the module docstring for the guarantees.

    Raises:
        SerError: before any work, for outputs, lists, models and locks that cannot be used;
            ShrinkRefused, when the run would drop too many rows; OutputFailed, when writing
            fails during the run.
    """
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    fmt = report_format(options.output, options.fmt)
    check_output(options.output, fmt)
    segments_fmt = "csv"
    if options.segments is not None:
        segments_fmt = report_format(str(options.segments), what="segments file")
        check_output(str(options.segments), segments_fmt, "segments file")
    segmentation = options.segmenting()
    sources = [*inputs, *(read_file_list(options.files_from) if options.files_from else [])]
    speaker_source = load_speakers(options.speaker_from, options.speakers)
    if options.speaker_mode:
        _check_speaker_mode(options)
    engine = make_engine(options)
    model = engine.model
    segmentation = segmentation.for_model(model.metadata)  # as the frontends settle it
    # fails on a bad model; names the window, hop and segmentation (part of every row's key)
    try:
        frontend = frontend_for(model.metadata, hop_s=options.hop, segmentation=segmentation)
    except ValueError as error:  # a hop longer than this model's window
        raise UsageError(str(error)) from None
    settings = frontend.settings
    to_file = options.output != "-"
    report = Path(options.output)
    speaker = None
    if speaker_source is not None:
        speaker = _speaker_mode(options, engine, speaker_source, report, settings)
        settings += SPEAKER_SETTING  # a plain run never reuses speaker-normalised rows
    fmt_rows = RowFormat(
        model.labels, model.name, model.sha256, settings, options.segments is not None
    )
    with run_lock(report) if to_file else nullcontext() as lock:
        journal = Journal(journal_path(report), fresh=not options.incremental) if to_file else None
        try:
            discovery = discover(sources, include=options.include, exclude=options.exclude)
            _say_empty(discovery, kept=options.incremental and to_file)
            previous = Previous.none()
            if options.incremental and to_file:
                previous = Previous.read(report, fmt, journal.path, options.segments, segments_fmt)
            plan = plan_run(
                discovery, previous, sha=model.sha256, settings=settings,
                keep_removed=options.keep_removed, with_segments=options.segments is not None,
                cached=speaker.cache.has if speaker is not None else None,
            )  # fmt: skip
            check_shrink(plan, previous, report, allowed=options.allow_shrink)
            writing = _Writing(str(journal.path) if journal is not None else options.output)
            try:
                cache = speaker.cache if speaker is not None else None
                scored, summary = _score(plan.todo, engine, fmt_rows, journal, lock, cache)
                rows, segments = _assemble(plan, scored, previous)
                if speaker is not None:
                    rescored, stats = rescore_by_speaker(
                        rows, speaker.cache, speaker.head, speaker.settings,
                        labels=model.labels, sample_rate=model.metadata.sample_rate,
                    )  # fmt: skip
                    rows = [item.row for item in rescored]
                    segments = [row for item in rescored for row in item.segment_rows]
                    summary += _speaker_summary(rows, stats, speaker_source)
                with_speaker = speaker is not None
                columns = report_columns(model.labels, speaker=with_speaker)
                if journal is not None:  # the folder may have moved while speaker mode ran
                    journal.sync()
                    lock.check()
                writing.now(options.output)
                write_report(options.output, rows, columns, fmt)
                writing.report_published = True
                if options.segments is not None:
                    columns = segment_columns(model.labels, speaker=with_speaker)
                    writing.now(options.segments)
                    write_report(str(options.segments), segments, columns, segments_fmt)
                if journal is not None:
                    writing.now(provenance_path(report))
                    write_provenance(
                        report, model, settings=settings, started=started_at, rows=rows,
                        options=_recorded(options, segmentation), engine=engine.describe(),
                    )  # fmt: skip
                    journal.remove()
                if speaker is not None:  # the report is in place: its statistics now
                    kept = speaker.settings
                    writing.now(kept.stats_file)
                    write_stats(kept.stats_file, stats, model.sha256, kept.scoring)
                    speaker.cache.prune({row_key(row) for row in rows})  # old rows' features
            except OSError as error:
                raise OutputFailed(_output_failure(error, writing, journal)) from None
        finally:
            if journal is not None:
                journal.close()
    reused = len(plan.reused)
    kept = f"; {reused} unchanged files kept" if options.incremental else ""
    print(f"{summary}{kept} -> {options.output}", file=sys.stderr)
    failed = sum(row["status"] == "error" for row in rows)
    return RunOutcome(len(rows), len(plan.todo), reused, failed, len(discovery.empty_inputs))


def make_engine(options: RunOptions) -> Engine:
    """The engine ``options.engine`` names, with its model loaded (a bad model fails here).

    Raises:
        SerError: for an unknown engine, a missing ``ray`` extra, or a model that cannot load.
    """
    if options.engine == "ray":
        from ser.batch.ray_engine import RayEngine

        return RayEngine(options)
    if options.engine != "local":
        raise SerError(f"unknown engine {options.engine!r}; expected one of {', '.join(ENGINES)}")
    model = SessionPool(
        options.model, device=options.device, threads=options.threads, sessions=options.sessions
    )
    return LocalEngine(
        model, hop=options.hop, batch_size=options.batch_size,
        workers=options.workers or default_workers(model.provider),
        segmentation=options.segmenting(), features=options.speaker_mode,
    )  # fmt: skip


@dataclass(frozen=True)
class SpeakerRun:
    settings: SpeakerSettings
    head: SpeakerHead
    cache: FeatureCache


def _check_speaker_mode(options: RunOptions) -> None:
    """Refuse what speaker mode cannot do, before any engine starts (UsageError)."""
    if options.output == "-":
        raise UsageError("speaker mode needs -o FILE: its feature cache is kept beside the report")
    if options.engine != "local":
        raise UsageError("speaker mode runs on the local engine (--engine local)")
    if options.speaker_stats is not None:
        check_output(str(options.speaker_stats), "json", "speaker statistics file")


def _speaker_mode(
    options: RunOptions, engine: Engine, source: SpeakerSource, report: Path, scoring: str
) -> SpeakerRun:
    """The speaker settings and head (the engine keeps features: see :func:`make_engine`);
    ``scoring`` is the run's settings key, which frozen statistics must share.

    Raises:
        ModelError: for a model without a speaker head; SerError for unusable frozen statistics.
    """
    model = engine.model
    head = SpeakerHead(model.metadata, str(model.path), threads=options.threads)
    stats_file = options.speaker_stats or report.with_name(report.name + ".speakers.json")
    frozen = None
    if options.freeze_speaker_stats:  # read once, before any scoring, so a bad file fails now
        frozen = read_stats(stats_file, model.sha256, head.mean_shape, scoring)
    settings = SpeakerSettings.for_head(
        head, source, min_items=options.speaker_min_items,
        min_seconds=options.speaker_min_seconds, stats_file=stats_file, frozen=frozen,
        scoring=scoring,
    )  # fmt: skip
    return SpeakerRun(settings, head, FeatureCache.beside(report))


def _speaker_summary(rows: list[Row], stats: dict, source: SpeakerSource) -> str:
    normalised = sum(row.get("normalisation") == "speaker" for row in rows)
    unused = getattr(source, "unused", None)
    if unused is not None:  # a table naming files this run did not see: a typo, a moved file
        for path in unused(location_from_cell(row["path"]) for row in rows):
            source.problems.append(f"{source.source}: {path} is not among the scored files")
    problems = summarise_problems(source.problems)
    said = f"; {problems}" if problems else ""
    return f"; {normalised} of {len(rows)} rows scored against {len(stats)} speakers{said}"


def default_workers(provider: str) -> int:
    """Decoding threads when --workers is not given: 2, or 4 where CUDA runs the model.

    On the CPU the model is the slow part and 2 threads keep up (README, "Speed and memory");
    on an H200, 4 threads scored 1,440 clips in 0.9 s against 1.2 s with 2, and 8 or 16
    threads, or as many processes (each with its own GIL), were slower (README, "GPU").
    """
    return 4 if provider == "CUDAExecutionProvider" else 2


def _score(
    todo: Sequence[Found],
    engine: Engine,
    fmt: RowFormat,
    journal: Journal | None,
    lock: HeldLock | None,
    cache: FeatureCache | None = None,
) -> tuple[dict[int, tuple[Row, list[Row]]], str]:
    """Score ``todo``, committing each file's rows to the journal as soon as they arrive.

    Returns each file's row and window rows by its place in ``todo``, and the one-line summary
    of the scoring.

    Raises:
        SerError: when the engine ends without a row for every file.
    """
    progress = Progress(len(todo))
    scored: dict[int, tuple[Row, list[Row]]] = {}
    for index, row, segments, features in engine.rows(todo, fmt):
        if index in scored:  # an engine that retried a group delivered it twice: once is kept
            continue
        if cache is not None and features is not None:  # before the journal: a row kept
            cache.put(row_key(row), features)  # there always has its features
        if journal is not None and journal.append(row, segments):
            lock.check()  # with the journal's own check, twice a second rather than per row
        scored[index] = (row, segments)
        status = row["status"]
        progress.update(status != "error", float(row["duration_s"] or 0.0), status == "no_speech")
    if journal is not None:
        journal.sync()
        lock.check()
    if len(scored) != len(todo):
        name = engine.describe()["engine"]
        raise SerError(
            f"the {name} engine returned {len(scored)} of {len(todo)} files; the rows it "
            "returned are kept in the journal for the next --incremental run"
        )
    return scored, progress.close()


def _assemble(
    plan: Plan, scored: dict[int, tuple[Row, list[Row]]], previous: Previous
) -> tuple[list[Row], list[Row]]:
    """The report's rows in discovery order (kept rows after them), and their window rows."""
    new = (scored[index] for index in range(len(scored)))
    rows: list[Row] = []
    segments: list[Row] = []
    for index in range(len(plan.found)):
        if index in plan.reused:
            row = plan.reused[index]
            rows.append(row)
            segments += previous.segments_of(row)
        else:
            row, window_rows = next(new)
            rows.append(row)
            segments += window_rows
    for row in plan.kept:
        rows.append(row)
        segments += previous.segments_of(row)
    return rows, segments


def _say_empty(discovery: Discovery, *, kept: bool) -> None:
    """Name every input that yielded no file: an error, whatever else the run does."""
    outcome = "its previous rows are kept" if kept else "nothing scored from it"
    for empty in discovery.empty_inputs:
        print(f"Error: {empty.path}: no files to score ({empty.reason}); {outcome}",
              file=sys.stderr)  # fmt: skip


@dataclass
class _Writing:
    """Which output a run is writing, and whether its report is already in place, so that a
    failed write says what was and was not written."""

    path: str
    report_published: bool = False

    def now(self, path: str | Path) -> None:
        self.path = str(path)


def _output_failure(error: OSError, writing: _Writing, journal: Journal | None) -> str:
    where = error.filename or writing.path
    state = (
        f"the report is updated, {writing.path} is not"
        if writing.report_published
        else "the previous report is intact"
    )
    message = f"cannot write {where} ({error.strerror or error}); {state}"
    if journal is not None and not writing.report_published:
        message += (
            f"; the {journal.rows} files this run scored are kept in {journal.path} for the "
            "next --incremental run"
        )
    return message


def _recorded(options: RunOptions, segmentation: Segmentation) -> dict[str, object]:
    """The options the provenance sidecar records (the segmentation as settled for the model)."""
    return {
        "hop": options.hop,
        "segmentation": vars(segmentation),
        "batch_size": options.batch_size,
        "incremental": options.incremental,
        "device": options.device,
        "threads": options.threads,
        "speakers": None
        if not options.speaker_mode
        else {
            "from": options.speaker_from or str(options.speakers),
            "min_items": options.speaker_min_items,
            "min_seconds": options.speaker_min_seconds,
            "frozen": options.freeze_speaker_stats,
        },
    }
