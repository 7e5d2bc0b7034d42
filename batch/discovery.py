"""Which files a run scores, in a deterministic order, each once.

Named files are always taken; below named directories (walked recursively, following symbolic
links, without recursion in Python so depth has no limit) files with an audio extension are
taken, or those matching ``include`` globs when given. ``exclude`` globs drop files and whole
directories. A directory reached twice (through another link, or a cycle) is walked once, and a
file reached by several paths (overlapping inputs, links) is kept once, under the first path
it was found by. Only regular files are ever opened: anything else, unreadable directories and
symlink loops come out as entries with ``error`` set. An input that yields no entry at all (it
does not exist, or holds no matching file) is listed in ``Discovery.empty_inputs``, so a caller
can tell an unmounted share from a folder whose files were deleted one by one. An input that
is an object URI (``s3://bucket/prefix``) is listed through :mod:`ser.batch.objects` with the
same rules.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ser.audio import AUDIO_EXTENSIONS
from ser.batch.objects import ObjectUri, is_uri, list_objects
from ser.errors import SerError

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


UNREADABLE_FOLDER = "cannot read directory"
"""The error of a folder found below an input that could not be listed."""


@dataclass(frozen=True)
class Found:
    """A path to score (with its size and modification time), or why it cannot be used.

    ``path`` is a local :class:`~pathlib.Path`, or an :class:`~ser.batch.objects.ObjectUri`.
    """

    path: Path | ObjectUri
    error: str = ""
    size_bytes: int | None = None
    mtime_ns: int | None = None
    identity: tuple[int, int] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, path: Path | str) -> Found:
        """The file at ``path`` now: stamped with size and time, or the reason it is unusable.

        Raises:
            SerError: for an object URI whose store cannot be reached.
        """
        if is_uri(path):
            objects, reason = list_objects(str(path))
            if len(objects) != 1 or objects[0][0] != path:
                return cls(ObjectUri(path), reason or "a prefix, not an object")
            location, size, mtime = objects[0]
            return cls(location, "", size, mtime)
        path = Path(path)
        try:
            info = path.stat()
        except OSError as error:
            return cls(path, _stat_problem(path, error))
        identity = (info.st_dev, info.st_ino)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "a special file")
            return cls(path, f"not a regular file ({kind})", identity=identity)
        return cls(path, "", info.st_size, info.st_mtime_ns, identity)


@dataclass(frozen=True)
class EmptyInput:
    """An input that yielded no file, and why."""

    path: Path | ObjectUri
    reason: str


@dataclass(frozen=True)
class Discovery:
    """The entries to score, in order, the inputs that yielded none, and the folders below
    them that could not be read (an incremental run keeps their earlier rows)."""

    found: list[Found]
    empty_inputs: list[EmptyInput]
    unreadable: list[Path] = field(default_factory=list)

    def __iter__(self) -> Iterator[Found]:
        return iter(self.found)

    def __len__(self) -> int:
        return len(self.found)


def discover(
    inputs: Iterable[str | Path], *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Discovery:
    """Every input file and every matching file below every input directory, each once."""
    found: list[Found] = []
    empty: list[EmptyInput] = []
    seen: set[object] = set()
    for raw in inputs:
        path = ObjectUri(raw) if is_uri(raw) else Path(raw)
        if _matches(path, exclude):
            continue
        if isinstance(path, ObjectUri):
            entries, reason = _objects(path, include, exclude)
        else:
            entries, reason = _entries(path, include, exclude)
        if reason:
            empty.append(EmptyInput(path, reason))
        found += _first_of_each(entries, seen)
    unreadable = [entry.path for entry in found if entry.error.startswith(UNREADABLE_FOLDER)]
    return Discovery(found, empty, unreadable)


def read_file_list(source: str) -> list[str]:
    """Paths, one per line, from a file or ``-`` (standard input); blank lines are skipped.

    Lines are bytes decoded as the OS decodes file names, so any name a folder holds can be
    listed.

    Raises:
        SerError: when the list cannot be read.
    """
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as error:
        raise SerError(f"--files-from {source}: cannot read ({error.strerror})") from None
    return [os.fsdecode(line) for line in data.splitlines() if line.strip()]


def _entries(path: Path, include: Sequence[str], exclude: Sequence[str]) -> tuple[list[Found], str]:
    """One input's entries, or why it has none."""
    try:
        is_dir = path.is_dir()
    except OSError as error:  # pathlib lets permission and name-length errors through
        return [], f"cannot read ({error.strerror})"
    if is_dir:
        entries = _walk(path, include, exclude)
        return entries, "" if entries else "no matching audio files in it"
    found = Found.of(path)
    if found.error and not os.path.exists(path):  # missing, a broken link or a link loop
        return [], found.error
    return [found], ""


def _objects(
    uri: ObjectUri, include: Sequence[str], exclude: Sequence[str]
) -> tuple[list[Found], str]:
    """One object input's entries, or why it has none: a named object is always taken."""
    objects, reason = list_objects(uri)
    if reason:
        return [], reason
    if len(objects) == 1 and objects[0][0] == uri:
        return [Found(uri, "", *objects[0][1:])], ""
    base = len(uri.rstrip("/")) + 1
    entries = [
        Found(location, "", size, mtime)
        for location, size, mtime in objects
        if _wanted(location, include) and not _excluded_below(location, base, exclude)
    ]
    return entries, "" if entries else "no matching audio files in it"


def _excluded_below(location: ObjectUri, base: int, exclude: Sequence[str]) -> bool:
    """Whether ``exclude`` drops the object or one of its "folders" below the listed prefix."""
    parts = location[base:].split("/")
    return any(
        _matches(ObjectUri(location[:base] + "/".join(parts[: depth + 1])), exclude)
        for depth in range(len(parts))
    )


def _walk(root: Path, include: Sequence[str], exclude: Sequence[str]) -> list[Found]:
    """Files below ``root``, sorted and each once; then directories that could not be read.

    The walk is iterative (two stacks, no recursion), so depth has no limit. Folders reached
    without a symbolic link are walked before those reached through one, so a folder or file
    that both reach is shown by its real path.
    """
    found: list[tuple[bool, Found]] = []
    problems: list[Found] = []
    visited: set[tuple[int, int]] = set()
    real, linked = [root], []
    while real or linked:
        via_link = not real
        folder = linked.pop() if via_link else real.pop()
        try:
            info = folder.stat()
            if (info.st_dev, info.st_ino) in visited:
                continue  # reached before, through another link or a cycle: walked once
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as scan:  # the entries' types from the listing itself:
                entries = sorted((e.name, _is_dir(e), e.is_symlink()) for e in scan)
        except OSError as error:  # unreadable, unsearchable, or a path too long to open
            problems.append(Found(folder, f"{UNREADABLE_FOLDER} ({error.strerror})"))
            continue
        for name, is_dir, is_link in entries:
            path = folder / name
            if _matches(path, exclude):
                continue
            if is_dir:
                (linked if via_link or is_link else real).append(path)
            elif _wanted(path, include):
                found.append((via_link or is_link, Found.of(path)))
    preferred = [entry for _, entry in sorted(found, key=lambda item: (item[0], item[1].path))]
    return sorted(_first_of_each(preferred, set()), key=lambda item: item.path) + problems


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder (through a link too); an entry that cannot be followed (a
    link loop, no permission) is taken as a file, whose row then says why it cannot be read."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _first_of_each(entries: Iterable[Found], seen: set[object]) -> list[Found]:
    """The entries whose file (or, for an entry without one, path) is not in ``seen`` yet."""
    unique = []
    for entry in entries:
        key = entry.identity or entry.path
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique


def _wanted(path: Path | ObjectUri, include: Sequence[str]) -> bool:
    if include:
        return _matches(path, include)
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _matches(path: Path | ObjectUri, patterns: Sequence[str]) -> bool:
    text = path.as_posix()
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(text, p) for p in patterns)


def _stat_problem(path: Path, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if error.errno == errno.ENOENT:
        return "broken symbolic link" if path.is_symlink() else "no such file or directory"
    return f"cannot read file ({error.strerror})"
