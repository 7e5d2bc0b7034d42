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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ser.batch.feature_cache import FeatureCache, FileFeatures, MemoryFeatures
from ser.batch.incremental import row_key
from ser.batch.report import KEY_COLUMNS, cell, escape_text, path_from_cell, probability_cells
from ser.batch.scoring import Segment, aggregate
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

    def __init__(self, metadata: ModelMetadata, source: str) -> None:
        self.spec = speaker_spec(metadata, source)
        try:
            graph = base64.b64decode(metadata.extra["speaker_head"], validate=True)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # a damaged model file: say so in one line
            raise ModelError(f"{source}: its speaker head cannot be loaded ({error})") from None
        self.min_items = int(self.spec.get("min_items", 1))
        self.min_seconds = float(self.spec.get("min_seconds", 0.0))

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
    freeze: bool = False


@dataclass
class _Entry:
    row: Row
    features: FileFeatures | None
    assignments: list[Assignment]


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
    model_sha256: str,
) -> tuple[list[Rescored], dict[str, SpeakerStats]]:
    """Every row (in order) in speaker mode, and the statistics used (written to
    ``settings.stats_file`` unless it is None)."""
    entries = [_entry(row, cache, settings.source, sample_rate) for row in rows]
    stats = speaker_statistics(item for entry in entries for item in _items(entry, sample_rate))
    if settings.freeze:
        stats.update(read_stats(settings.stats_file, model_sha256))
    rescored = [_rescore(entry, stats, head, settings, labels, sample_rate) for entry in entries]
    if settings.stats_file is not None:
        write_stats(settings.stats_file, stats, model_sha256)
    return rescored, stats


def _entry(
    row: Row, cache: FeatureCache | MemoryFeatures, source: SpeakerSource, rate: int
) -> _Entry:
    features = cache.get(row_key(row)) if row.get("status") == "ok" else None
    path = path_from_cell(row["path"])
    if features is None:
        return _Entry(row, None, [source.assign(path, 0.0, float("inf"))])
    spans = [features.item_span(r) for r in range(len(features.starts))]
    return _Entry(row, features, [source.assign(path, s / rate, e / rate) for s, e in spans])


def _items(entry: _Entry, rate: int) -> list[Item]:
    features = entry.features
    if features is None:
        return []
    items = []
    for r, assignment in enumerate(entry.assignments):
        if assignment.speaker is None:
            continue
        valid = features.valid[r]
        frame_sum = features.frames[r][:, valid, :].astype(np.float64).sum(axis=1)
        seconds = (int(features.ends[r]) - int(features.starts[r])) / rate
        key = (entry.row["path"], int(features.starts[r]))
        items.append(Item(key, assignment.speaker, frame_sum, int(valid.sum()), seconds))
    return items


def _rescore(
    entry: _Entry,
    stats: dict[str, SpeakerStats],
    head: SpeakerHead,
    settings: SpeakerSettings,
    labels: Sequence[str],
    rate: int,
) -> Rescored:
    row, features = dict(entry.row), entry.features
    reasons = [_fallback(a, stats, settings) for a in entry.assignments]
    main = _main_speaker(entry, rate)
    row["speaker"] = escape_text(main or "")
    row["speaker_items"] = str(stats[main].items) if main in stats else ""
    if features is None:  # an error or no-speech row: nothing to score
        row["normalisation"] = "none"
        return Rescored(row, [], None)
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
    segment_rows = _segment_rows(row, segments, features, entry.assignments, reasons, labels)
    return Rescored(row, segment_rows, file_probs)


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


def _main_speaker(entry: _Entry, rate: int) -> str | None:
    """The speaker of most of the file's items' audio (a tie: the first name)."""
    seconds: dict[str, float] = defaultdict(float)
    features = entry.features
    for r, assignment in enumerate(entry.assignments):
        if assignment.speaker is not None:
            span = 1.0 if features is None else (features.ends[r] - features.starts[r]) / rate
            seconds[assignment.speaker] += float(span)
    if not seconds:
        return None
    return min(seconds, key=lambda speaker: (-seconds[speaker], speaker))


def _segment_rows(
    row: Row,
    segments: list[Segment],
    features: FileFeatures,
    assignments: list[Assignment],
    reasons: list[str],
    labels: Sequence[str],
) -> list[Row]:
    """The file's segment rows, each with the speaker of its first item."""
    key = {column: row[column] for column in ("path", *KEY_COLUMNS)}
    first_row = _first_rows(features, len(segments))
    return [
        {
            **key,
            "start_s": cell("start_s", segment.start_s),
            "end_s": cell("end_s", segment.end_s),
            **probability_cells(segment.probs, labels),
            "speaker": escape_text(assignments[r].speaker or ""),
            "normalisation": "none" if reasons[r] else "speaker",
        }
        for segment, r in zip(segments, first_row, strict=True)
    ]


def _first_rows(features: FileFeatures, count: int) -> list[int]:
    """Each segment's first item: the window itself, or the first window of a speech region."""
    if features.region_of_row is None:
        return list(range(count))
    firsts: dict[int, int] = {}
    for r, region in enumerate(features.region_of_row.tolist()):
        firsts.setdefault(region, r)
    return [firsts[k] for k in range(count)]


def write_stats(path: Path, stats: dict[str, SpeakerStats], model_sha256: str) -> None:
    """The statistics a run used, for ``--freeze-speaker-stats`` in later runs."""
    document = {
        "format": STATS_FORMAT,
        "model_sha256": model_sha256[:16],
        "speakers": {name: stats[name].to_json() for name in sorted(stats)},
    }
    with atomic_write(path) as out:
        out.write(json.dumps(document, indent=1))


def read_stats(path: Path, model_sha256: str) -> dict[str, SpeakerStats]:
    """Statistics kept from an earlier run of the same model.

    Raises:
        SerError: when the file is missing, malformed, or from another model.
    """
    try:
        document = json.loads(path.read_text())
        if document.get("format") != STATS_FORMAT:
            raise ValueError(f"not a {STATS_FORMAT} file")
        if document["model_sha256"] != model_sha256[:16]:
            raise SerError(
                f"{path}: speaker statistics of model {document['model_sha256']}, not of this "
                f"model ({model_sha256[:16]}); drop --freeze-speaker-stats to compute them anew"
            )
        return {name: SpeakerStats.from_json(v) for name, v in document["speakers"].items()}
    except OSError as error:
        raise SerError(
            f"--freeze-speaker-stats: cannot read {path} ({error.strerror or error}); run "
            "once without it to write the statistics"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise SerError(f"{path}: malformed speaker statistics ({error})") from None
