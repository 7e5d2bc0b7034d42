"""Object-store inputs (``s3://bucket/prefix``, ``gs://...``) through pyarrow's filesystems.

A prefix is listed recursively; each object's size and modification time come from the
listing, so ``--incremental`` recognises unchanged objects as it does files. An object is
decoded from a temporary local copy, so it goes through the one audio path (``ser.audio``)
exactly as a file does. Credentials and endpoints come from the environment, as pyarrow reads
them (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, an instance role...).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from ser.errors import SerError

_URI = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$")
_LOCAL_SCHEMES = ("file",)


class ObjectUri(str):
    """An object's URI, kept whole (``pathlib`` would fold its ``//``); names like a path."""

    @property
    def name(self) -> str:
        return PurePosixPath(self.split("://", 1)[1]).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def as_posix(self) -> str:
        return str(self)


def is_uri(location: object) -> bool:
    """Whether ``location`` names an object in a store rather than a local file."""
    if isinstance(location, ObjectUri):
        return True
    match = _URI.match(str(location)) if isinstance(location, str) else None
    return bool(match) and match.group(1) not in _LOCAL_SCHEMES


def list_objects(uri: str) -> tuple[list[tuple[ObjectUri, int, int]], str]:
    """Every object at or below ``uri``, sorted, with its size and mtime in ns; or why none.

    Raises:
        SerError: when pyarrow is missing or the store cannot be reached or listed.
    """
    fs, path = _filesystem(uri)
    pafs = _pyarrow_fs()
    scheme = uri.split("://", 1)[0]
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return [(ObjectUri(uri), info.size, info.mtime_ns)], ""
        if info.type == pafs.FileType.NotFound:
            return [], "no such object or prefix"
        listing = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    except OSError as error:
        raise SerError(f"{uri}: cannot list ({_one_line(error)})") from None
    objects = [
        (ObjectUri(f"{scheme}://{entry.path}"), entry.size, entry.mtime_ns)
        for entry in listing
        if entry.type == pafs.FileType.File
    ]
    return sorted(objects), ""


@contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """The object downloaded to a private temporary file, removed afterwards.

    Raises:
        OSError: when the object cannot be read.
    """
    fs, path = _filesystem(uri)
    fd, temp = tempfile.mkstemp(prefix="ser-object-", suffix=PurePosixPath(path).suffix)
    try:
        with os.fdopen(fd, "wb") as sink, fs.open_input_stream(path) as source:
            while chunk := source.read(1 << 20):
                sink.write(chunk)
        yield Path(temp)
    finally:
        Path(temp).unlink(missing_ok=True)


@lru_cache(maxsize=16)
def _store(scheme: str, bucket: str) -> Any:
    """One filesystem per bucket and process: creating one costs far more than a request."""
    return _pyarrow_fs().FileSystem.from_uri(f"{scheme}://{bucket}")[0]


def _filesystem(uri: str) -> tuple[Any, str]:
    """The store holding ``uri`` and the object's path in it (``bucket/key``)."""
    match = _URI.match(uri)
    if not match:
        raise SerError(f"{uri}: not an object URI (scheme://bucket/key)")
    scheme, rest = match.groups()
    try:
        return _store(scheme, rest.split("/", 1)[0]), rest.rstrip("/")
    except (OSError, ValueError) as error:  # pyarrow: unknown scheme, bad options
        raise SerError(f"{uri}: cannot open this object store ({_one_line(error)})") from None


def _pyarrow_fs() -> Any:
    try:
        import pyarrow.fs
    except ImportError:
        raise SerError(
            "object-store inputs (s3://...) need pyarrow: pip install 'ser-toolkit[ray]' "
            "(or '[parquet]')"
        ) from None
    return pyarrow.fs


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
