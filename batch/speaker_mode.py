"""Speaker mode's second pass: every row re-scored against its speaker's own baseline.

Pass 1 is an ordinary scoring run whose model also returns each item's frame features; they
go to a :class:`~ser.batch.feature_cache.FeatureCache` beside the report. Once every file is
scored, each speaker's mean frame comes from all of its items (this run's and earlier runs'
alike, :mod:`ser.batch.speaker_stats`), and the speaker head, a small ONNX graph the model
carries in its metadata, scores each item's frames centred by that mean. The encoder never
runs here. Items whose speaker is unknown or has too little audio keep the plain head's
probabilities, and their row says why.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.batch.feature_cache import FeatureCache, FileFeatures, MemoryFeatures
from ser.batch.incremental import row_key
from ser.batch.records import location_from_cell
from ser.batch.report import escape_text, probability_cells, window_rows
from ser.batch.scoring import aggregate
from ser.batch.session import speaker_spec
from ser.batch.speaker_stats import Item, SpeakerStats, enough, speaker_statistics
from ser.batch.speakers import Assignment, SpeakerSource
from ser.errors import ModelError, SerError
from ser.files import atomic_write
from ser.metadata import ModelMetadata

Row = dict[str, str]
SPEAKER_SETTING = ";speaker"
"""Added to a speaker-mode row's settings key: a plain run never reuses speaker-mode rows."""
STATS_FORMAT = "ser-speaker-stats/1"


class SpeakerHead:
    """The speaker-normalised head: centred frame features ``[n, members, frames, dim]`` and
    valid-frame masks in, probabilities out (CPU: it is small next to the encoder)."""

    def __init__(self, metadata: ModelMetadata, source: str, threads: int | None = None) -> None:
        self.spec = speaker_spec(metadata, source)
        try:
            graph = base64.b64decode(metadata.extra["speaker_head"], validate=True)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:  # --threads bounds this session too
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # a damaged model file: say so in one line
            raise ModelError(f"{source}: its speaker head cannot be loaded ({error})") from None
        self.min_items = int(self.spec.get("min_items", 1))
        self.min_seconds = float(self.spec.get("min_seconds", 0.0))
        self.mean_shape = (int(self.spec.get("members", 1)), int(self.spec.get("bottleneck", 0)))
        """A speaker's mean frame: one feature vector per ensemble member."""

    def probs(self, centred: np.ndarray, valid: np.ndarray, batch_size: int = 64) -> np.ndarray:
        outputs = [
            self.session.run(
                ["probs"],
                {"centred": centred[i : i + batch_size], "valid": valid[i : i + batch_size]},
            )[0]
            for i in range(0, len(centred), batch_size)
        ]
        return np.concatenate(outputs)


@dataclass(frozen=True)
class SpeakerSettings:
    """How speaker mode runs: who speaks, the minimum a speaker needs, frozen statistics."""

    source: SpeakerSource
    min_items: int
    min_seconds: float
    stats_file: Path | None  # None: not written (the Python API)
    frozen: Mapping[str, SpeakerStats] | None = None  # --freeze-speaker-stats: read once
    scoring: str | None = None  # the run's settings key (window, hop, segmentation)

    @classmethod
    def for_head(
        cls,
        head: SpeakerHead,
        source: SpeakerSource,
        *,
        min_items: int | None = None,
        min_seconds: float | None = None,
        stats_file: Path | None = None,
        frozen: Mapping[str, SpeakerStats] | None = None,
        scoring: str | None = None,
    ) -> SpeakerSettings:
        """Settings whose minimums default to the model's own (``None``: its metadata's)."""
        return cls(
            source, head.min_items if min_items is None else min_items,
            head.min_seconds if min_seconds is None else min_seconds, stats_file, frozen, scoring,
        )  # fmt: skip


@dataclass(frozen=True)
class _Entry:
    """A row, who speaks in each of its items, and each item's seconds (None: no features)."""

    row: Row
    assignments: list[Assignment]
    seconds: list[float] | None


@dataclass(frozen=True)
class Rescored:
    """A row in speaker mode: its report row, segment rows and probabilities (None: none)."""

    row: Row
    segment_rows: list[Row]
    probs: np.ndarray | None


def rescore_by_speaker(
    rows: Sequence[Row],
    cache: FeatureCache | MemoryFeatures,
    head: SpeakerHead,
    settings: SpeakerSettings,
    *,
    labels: Sequence[str],
    sample_rate: int,
) -> tuple[list[Rescored], dict[str, SpeakerStats]]:
    """Every row (in order) in speaker mode, and the statistics used (for the caller to write
    to ``settings.stats_file`` once the report is in place, so that the file never describes
    rows that were not published).

    Each row's features are read twice, once for the statistics and once to score it, so that
    memory holds one file's features at a time rather than the whole report's.
    """
    entries, items = [], []
    for row in rows:
        features = _features(row, cache)
        entry = _entry(row, features, settings.source, sample_rate)
        entries.append(entry)
        items += _items(entry, features, sample_rate)
    stats = speaker_statistics(items)
    stats.update(settings.frozen or {})
    rescored = [
        _rescore(entry, _features(entry.row, cache), stats, head, settings, labels, sample_rate)
        for entry in entries
    ]
    return rescored, stats


def _features(row: Row, cache: FeatureCache | MemoryFeatures) -> FileFeatures | None:
    return cache.get(row_key(row)) if row.get("status") == "ok" else None


def _entry(row: Row, features: FileFeatures | None, source: SpeakerSource, rate: int) -> _Entry:
    path = location_from_cell(row["path"])
    if features is None:
        return _Entry(row, [source.assign(path, 0.0, float("inf"))], None)
    spans = [features.item_span(r) for r in range(len(features.starts))]
    assignments = [source.assign(path, s / rate, e / rate) for s, e in spans]
    return _Entry(row, assignments, _own_seconds(features, assignments, rate))


def _own_seconds(features: FileFeatures, assignments: list[Assignment], rate: int) -> list[float]:
    """Each item's audio that no earlier item of the same speaker in the file covers, so that
    overlapping windows (``--hop`` under the window) count each second of a speaker once."""
    covered: dict[str | None, int] = {}
    seconds = [0.0] * len(assignments)
    for r in np.argsort(features.starts, kind="stable").tolist():
        start, end = int(features.starts[r]), int(features.ends[r])
        speaker = assignments[r].speaker
        reached = covered.get(speaker, start)
        seconds[r] = max(0, end - max(start, reached)) / rate
        covered[speaker] = max(reached, end)
    return seconds


def _items(entry: _Entry, features: FileFeatures | None, rate: int) -> list[Item]:
    if features is None:
        return []
    items = []
    for r, assignment in enumerate(entry.assignments):
        if assignment.speaker is None:
            continue
        valid = features.valid[r]
        frame_sum = features.frames[r][:, valid, :].astype(np.float64).sum(axis=1)
        key = (entry.row["path"], int(features.starts[r]))
        items.append(Item(key, assignment.speaker, frame_sum, int(valid.sum()), entry.seconds[r]))
    return items


def _rescore(
    entry: _Entry,
    features: FileFeatures | None,
    stats: dict[str, SpeakerStats],
    head: SpeakerHead,
    settings: SpeakerSettings,
    labels: Sequence[str],
    rate: int,
) -> Rescored:
    row = dict(entry.row)
    reasons = [_fallback(a, stats, settings) for a in entry.assignments]
    main = _main_speaker(entry)
    row["speaker"] = escape_text(main or "")
    row["speaker_items"] = str(stats[main].items) if main in stats else ""
    row["normalisation"] = "none"
    if features is None:
        if row.get("status") == "ok":  # its features went missing: never keep stale scores
            _unscored(row, "speaker mode: its cached features cannot be read; it is scored "
                      "again by the next run that finds its file")  # fmt: skip
        return Rescored(row, [], None)
    row["error"] = ""  # an earlier run's fallback reason no longer holds unless said below
    probs = features.probs.astype(np.float32).copy()
    normalised = [r for r, reason in enumerate(reasons) if not reason]
    if normalised:
        means = np.stack([stats[entry.assignments[r].speaker].mean for r in normalised])
        centred = features.frames[normalised].astype(np.float64) - means[:, :, None, :]
        probs[normalised] = head.probs(
            centred.astype(np.float32), features.valid[normalised].astype(np.float32)
        )
    file_probs, segments, _ = aggregate(features.geometry(), probs, rate)
    if file_probs is not None:
        row.update(probability_cells(file_probs, labels))
    row["normalisation"] = (
        "speaker" if len(normalised) == len(reasons) else "partial" if normalised else "none"
    )
    problems = list(dict.fromkeys(reason for reason in reasons if reason))
    if problems:
        row["error"] = escape_text(f"{'; '.join(problems)}: plain head")
    segment_rows = window_rows(segments, labels, row)
    for segment_row, r in zip(segment_rows, _first_rows(features, len(segments)), strict=True):
        segment_row["speaker"] = escape_text(entry.assignments[r].speaker or "")
        segment_row["normalisation"] = "none" if reasons[r] else "speaker"
    return Rescored(row, segment_rows, file_probs)


def _unscored(row: Row, reason: str) -> None:
    """Turn ``row`` into an error row (retried by the next incremental run)."""
    for column in list(row):
        if column in ("label", "confidence") or column.startswith("p_"):
            row[column] = ""
    row.update(status="error", error=escape_text(reason))


def _fallback(
    assignment: Assignment, stats: dict[str, SpeakerStats], settings: SpeakerSettings
) -> str:
    """Why an item keeps the plain head ("" when it is scored against its speaker)."""
    if assignment.speaker is None:
        return assignment.reason
    found = stats.get(assignment.speaker)
    if found is None or not enough(found, settings.min_items, settings.min_seconds):
        items, seconds = (found.items, found.seconds) if found else (0, 0.0)
        return (
            f"speaker {assignment.speaker} has {items} items and {seconds:.1f} s, under the "
            f"minimum of {settings.min_items} items and {settings.min_seconds:g} s"
        )
    return ""


def _main_speaker(entry: _Entry) -> str | None:
    """The speaker of most of the file's items' audio (a tie: the first name)."""
    seconds: dict[str, float] = defaultdict(float)
    for r, assignment in enumerate(entry.assignments):
        if assignment.speaker is not None:
            seconds[assignment.speaker] += 1.0 if entry.seconds is None else entry.seconds[r]
    if not seconds:
        return None
    return min(seconds, key=lambda speaker: (-seconds[speaker], speaker))


def _first_rows(features: FileFeatures, count: int) -> list[int]:
    """Each segment's first item: the window itself, or the first window of a speech region."""
    if features.region_of_row is None:
        return list(range(count))
    firsts: dict[int, int] = {}
    for r, region in enumerate(features.region_of_row.tolist()):
        firsts.setdefault(region, r)
    return [firsts[k] for k in range(count)]


def write_stats(
    path: Path, stats: dict[str, SpeakerStats], model_sha256: str, settings: str
) -> None:
    """The statistics a run used, and the scoring settings (window, hop, segmentation) they
    come from, for ``--freeze-speaker-stats`` in later runs."""
    document = {
        "format": STATS_FORMAT,
        "model_sha256": model_sha256[:16],
        "settings": settings,
        "speakers": {name: stats[name].to_json() for name in sorted(stats)},
    }
    with atomic_write(path) as out:
        out.write(json.dumps(document, indent=1))


def read_stats(
    path: Path, model_sha256: str, mean_shape: tuple[int, int], settings: str | None = None
) -> dict[str, SpeakerStats]:
    """Statistics kept from an earlier run of the same model (and, when the file records them,
    the same ``settings``), each mean finite and of ``mean_shape``.

    Raises:
        SerError: when the file is missing, malformed, or from another model or settings.
    """
    try:
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or document.get("format") != STATS_FORMAT:
            raise ValueError(f"not a {STATS_FORMAT} file")
        if document["model_sha256"] != model_sha256[:16]:
            raise SerError(
                f"{path}: speaker statistics of model {document['model_sha256']}, not of this "
                f"model ({model_sha256[:16]}); drop --freeze-speaker-stats to compute them anew"
            )
        kept = document.get("settings")
        if settings is not None and kept is not None and kept != settings:
            raise SerError(
                f"{path}: speaker statistics of windows scored with settings {kept!r}, not "
                f"{settings!r}; drop --freeze-speaker-stats to compute them anew"
            )
        stats = {name: SpeakerStats.from_json(v) for name, v in document["speakers"].items()}
        for name, found in stats.items():
            if found.mean.shape != mean_shape or not np.all(np.isfinite(found.mean)):
                raise ValueError(f"speaker {name}: the mean is not {mean_shape} finite numbers")
        return stats
    except OSError as error:
        raise SerError(
            f"--freeze-speaker-stats: cannot read {path} ({error.strerror or error}); run "
            "once without it to write the statistics"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SerError(f"{path}: malformed speaker statistics ({error})") from None
