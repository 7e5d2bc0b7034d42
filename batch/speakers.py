"""Who speaks in each scored item: the parent folder, a CSV of path and speaker, or an RTTM file.

Speaker-adaptive scoring judges each voice against its own baseline, so every scored item (a
file, a window, a speech region) needs a speaker. Users say who speaks in one of three ways:

- ``--speaker-from folder``: the file's parent folder names the speaker (RAVDESS's
  ``Actor_XX``, a call centre's folder per agent);
- ``--speakers FILE.csv``: a ``path,speaker`` table;
- ``--speakers FILE.rttm``: a diarization, the standard ``SPEAKER <file-id> 1 <start>
  <duration> <NA> <NA> <speaker> <NA> <NA>`` lines, which assign speakers to time ranges, so a
  call's agent and customer are told apart. An item goes to the speaker whose turns cover most
  of it.

Nothing here raises on a bad line: each one becomes a numbered message in ``problems`` and is
left out, and an item without a speaker gets an :class:`Assignment` whose ``reason`` says why,
so that its row falls back to the plain head instead of stopping the run.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from ser.batch.objects import ObjectUri, is_uri
from ser.errors import SerError

RTTM_FIELDS = 10
MAX_PROBLEMS_SHOWN = 5
Location = Path | ObjectUri  # what a report's path cell names


@dataclass(frozen=True)
class Assignment:
    """An item's speaker, or None and the reason there is none."""

    speaker: str | None
    reason: str = ""


@dataclass(frozen=True)
class Turn:
    """A stretch of one file where one speaker talks (an RTTM ``SPEAKER`` line)."""

    start_s: float
    end_s: float
    speaker: str


class SpeakerSource(Protocol):
    """Whatever names the speaker of a time range of a file."""

    problems: list[str]

    def assign(self, path: Location, start_s: float, end_s: float) -> Assignment: ...


@dataclass
class FolderSpeakers:
    """The parent folder's name is the speaker."""

    problems: list[str] = field(default_factory=list)

    def assign(self, path: Location, start_s: float = 0.0, end_s: float = math.inf) -> Assignment:
        # a local path's folder, however the input was spelled (``.`` inside Actor_01 too)
        name = PurePosixPath(path).parent.name if is_uri(path) else _real(path).parent.name
        if not name:
            return Assignment(None, "no parent folder to name the speaker (--speaker-from folder)")
        return Assignment(name)


@dataclass
class TableSpeakers:
    """A ``path,speaker`` CSV; paths are matched after resolving both sides (symbolic links
    and relative spellings included; object URIs as written).

    A relative path in the table is taken from the table's own folder, as a user who keeps
    ``speakers.csv`` beside the audio would write it.
    """

    source: Path
    by_path: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, source: Path) -> TableSpeakers:
        """Parse ``source``; bad lines go to ``problems`` (numbered), good ones are kept.

        Raises:
            SerError: when the file cannot be read or has no ``path`` and ``speaker`` columns.
        """
        table = cls(source)
        base = source.absolute().parent
        reader = csv.DictReader(io.StringIO(_read_text(source), newline=""))
        try:
            columns = {name.strip().lower() for name in reader.fieldnames or ()}
            if not {"path", "speaker"} <= columns:
                raise SerError(f"{source}: expected a CSV header with path and speaker columns")
            table._add_rows(reader, base)
        except csv.Error as error:  # e.g. a field over the csv module's size limit
            raise SerError(f"{source}:{reader.line_num + 1}: unreadable CSV ({error})") from None
        return table

    def _add_rows(self, reader: csv.DictReader, base: Path) -> None:
        source = self.source
        for raw in reader:
            number = reader.line_num
            record = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            path, speaker = record.get("path", ""), record.get("speaker", "")
            if not path or not speaker:
                self.problems.append(f"{source}:{number}: needs both a path and a speaker")
                continue
            key = _key(path, base)
            known = self.by_path.get(key)
            if known is not None and known != speaker:
                self.problems.append(
                    f"{source}:{number}: {path} is given two speakers ({known}, {speaker}); "
                    "the first is kept"
                )
                continue
            self.by_path[key] = speaker

    @classmethod
    def of(cls, mapping: Mapping[str | Path, str]) -> TableSpeakers:
        """A table given in memory (the Python API); relative paths are the working folder's."""
        return cls(Path("speakers"), {_key(p, Path.cwd()): str(s) for p, s in mapping.items()})

    def assign(self, path: Location, start_s: float = 0.0, end_s: float = math.inf) -> Assignment:
        speaker = self.by_path.get(_key(path, Path.cwd()))
        if speaker is None:
            return Assignment(None, f"no speaker for this file in {self.source.name}")
        return Assignment(speaker)

    def unused(self, scored: Iterable[Location]) -> list[str]:
        """Paths the table names that are not among ``scored`` (a typo, a moved file)."""
        seen = {_key(path, Path.cwd()) for path in scored}
        return sorted(key for key in self.by_path if key not in seen)


@dataclass
class RttmSpeakers:
    """Diarization turns by file id (the audio file's name without its extension)."""

    source: Path
    turns: dict[str, list[Turn]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, source: Path) -> RttmSpeakers:
        """Parse ``source``'s ``SPEAKER`` lines; other RTTM record types are skipped.

        Malformed lines (a field missing, a time that is not a finite number, a negative
        duration) and turns of two speakers that overlap in one file are reported in
        ``problems``; overlapping turns are kept, and an item goes to whoever covers more of it.
        Overlapping turns of one speaker (a repeated line) are merged first, so that no audio
        counts twice for anyone.

        Raises:
            SerError: when the file cannot be read.
        """
        rttm = cls(source)
        by_file: dict[str, list[Turn]] = defaultdict(list)
        for number, line in enumerate(_read_text(source).splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith((";", "#")) or fields[0] != "SPEAKER":
                continue
            where = f"{source}:{number}"
            if len(fields) < RTTM_FIELDS:
                rttm.problems.append(f"{where}: a SPEAKER line needs {RTTM_FIELDS} fields")
                continue
            try:
                start, duration = float(fields[3]), float(fields[4])
            except ValueError:
                rttm.problems.append(f"{where}: start and duration must be numbers")
                continue
            if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
                rttm.problems.append(f"{where}: start and duration must be finite and >= 0")
                continue
            by_file[fields[1]].append(Turn(start, start + duration, fields[7]))
        for file_id, turns in by_file.items():
            merged, repeats = _merge_own_turns(turns)
            if repeats:
                rttm.problems.append(
                    f"{source}: {file_id}: {repeats} turns repeat time their own speaker "
                    "already holds; merged"
                )
            rttm.problems += _overlaps(source, file_id, merged)
            rttm.turns[file_id] = merged
        return rttm

    def assign(self, path: Location, start_s: float, end_s: float) -> Assignment:
        turns = self.turns.get(_file_id(path))
        if turns is None:
            return Assignment(None, f"no turns for {_file_id(path)} in {self.source.name}")
        covered: dict[str, float] = defaultdict(float)
        for turn in turns:
            overlap = min(end_s, turn.end_s) - max(start_s, turn.start_s)
            if overlap > 0:
                covered[turn.speaker] += overlap
        if not covered:
            return Assignment(
                None, f"no turn in {self.source.name} covers {start_s:.2f}-{end_s:.2f} s"
            )
        # most covered; a tie goes to the first name, so the choice never depends on order
        return Assignment(min(covered, key=lambda speaker: (-covered[speaker], speaker)))


def speaker_source(speakers: str | Path | Mapping[str | Path, str]) -> SpeakerSource:
    """The Python API's ``speakers=``: ``"folder"``, a CSV or RTTM file, or a path->speaker
    mapping."""
    if isinstance(speakers, Mapping):
        return TableSpeakers.of(speakers)
    if speakers == "folder":
        return FolderSpeakers()
    return load_speakers(None, Path(speakers))


def load_speakers(speaker_from: str | None, speakers: Path | None) -> SpeakerSource | None:
    """The source the options name (None: no speaker mode).

    Raises:
        SerError: for both options at once, an unknown ``--speaker-from``, or a table that
            cannot be read.
    """
    if speaker_from and speakers:
        raise SerError("give --speaker-from or --speakers, not both")
    if speaker_from:
        if speaker_from != "folder":
            raise SerError(f"unknown --speaker-from {speaker_from!r}; expected folder")
        return FolderSpeakers()
    if speakers is None:
        return None
    if speakers.suffix.lower() == ".rttm":
        return RttmSpeakers.read(speakers)
    return TableSpeakers.read(speakers)


def summarise_problems(problems: list[str]) -> str:
    """One line for the run's log: how many problems (lines left out, merged, unused), and
    the first few."""
    if not problems:
        return ""
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = f" (and {len(problems) - MAX_PROBLEMS_SHOWN} more)" if len(problems) > 5 else ""
    return f"{len(problems)} problems with who speaks: {shown}{more}"


def _merge_own_turns(turns: list[Turn]) -> tuple[list[Turn], int]:
    """Each speaker's turns as disjoint stretches (sorted by start), and how many overlapped."""
    merged: list[Turn] = []
    repeats = 0
    for speaker in sorted({turn.speaker for turn in turns}):
        own = sorted((t.start_s, t.end_s) for t in turns if t.speaker == speaker)
        start, end = own[0]
        for next_start, next_end in own[1:]:
            if next_start < end:  # touching turns (next_start == end) are not repeats
                repeats += 1
                end = max(end, next_end)
                continue
            merged.append(Turn(start, end, speaker))
            start, end = next_start, next_end
        merged.append(Turn(start, end, speaker))
    merged.sort(key=lambda turn: (turn.start_s, turn.end_s, turn.speaker))
    return merged, repeats


def _overlaps(source: Path, file_id: str, turns: list[Turn]) -> list[str]:
    """Turns of different speakers in one file that overlap (sorted by start)."""
    problems, latest = [], None
    for turn in turns:
        if latest is not None and turn.start_s < latest.end_s and turn.speaker != latest.speaker:
            problems.append(
                f"{source}: {file_id}: turns of {latest.speaker} and {turn.speaker} overlap at "
                f"{turn.start_s:.2f}-{min(turn.end_s, latest.end_s):.2f} s"
            )
        if latest is None or turn.end_s > latest.end_s:
            latest = turn
    return problems


def _read_text(source: Path) -> str:
    try:
        # undecodable bytes are kept apart (as file names are), never merged into one "?"
        return source.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as error:
        raise SerError(f"cannot read {source} ({error.strerror or error})") from None


def _key(path: str | Path, base: Path) -> str:
    """A local path made absolute against ``base`` with its symbolic links resolved; an object
    URI as written."""
    text = os.fspath(path)
    return str(text) if is_uri(text) else os.fspath(_real(Path(base, text)))


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))


def _file_id(path: Path) -> str:
    """RTTM's file id: the file's name without its extension."""
    return Path(path).stem
