"""A decoded file as plain values, so an engine can ship it to another process or machine.

A record holds only strings, integers and numpy arrays (float32 model inputs, int64 spans):
it pickles, converts to an Arrow row, and comes back as the same :class:`Prepared`, so the
scores are the same wherever it is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ser.batch.discovery import Found
from ser.batch.frontends import ModelInputs
from ser.batch.objects import ObjectUri, is_uri
from ser.batch.report import path_cell, path_from_cell
from ser.batch.scoring import Prepared

Record = dict[str, Any]


def to_record(prepared: Prepared) -> Record:
    """``prepared`` as plain values (see the module docstring).

    Raises:
        ValueError: for a streamed file (over a minute, for a windowed model), which is never
            held decoded: score it where the file is.
    """
    if prepared.stream is not None:
        raise ValueError(
            f"{prepared.found.path}: a streamed file has no record; score it where it is read"
        )
    found, inputs = prepared.found, prepared.inputs
    return {
        "path": path_cell(found.path),
        "error": prepared.error,
        "size_bytes": found.size_bytes,
        "mtime_ns": found.mtime_ns,
        "samples": prepared.samples,
        "rows": None if inputs is None else list(np.ascontiguousarray(inputs.rows, np.float32)),
        "starts": None if inputs is None else np.asarray(inputs.starts, np.int64),
        "ends": None if inputs is None else np.asarray(inputs.ends, np.int64),
        "regions": None if inputs is None else _optional_pairs(inputs.regions),
        "region_of_row": None if inputs is None else _optional_array(inputs.region_of_row),
    }


def from_record(record: Record) -> Prepared:
    """The :class:`Prepared` a record was made from (the inverse of :func:`to_record`)."""
    found = Found(
        location_from_cell(record["path"]),
        "",
        _optional_int(record.get("size_bytes")),
        _optional_int(record.get("mtime_ns")),
    )
    if record.get("rows") is None:
        return Prepared(found, error=record.get("error") or "")
    rows = [np.asarray(row, np.float32) for row in record["rows"]]  # Arrow: lists
    rows = np.stack(rows) if rows else np.zeros((0, 0), np.float32)  # no speech: no rows
    starts, ends = (np.asarray(record[key], np.int64) for key in ("starts", "ends"))
    regions, owner = record.get("regions"), record.get("region_of_row")
    if regions is not None:  # speech regions (--segmentation vad)
        regions = np.asarray([list(r) for r in regions], np.int64).reshape(-1, 2)
        owner = np.asarray(owner, np.int64)
    inputs = ModelInputs(rows, starts, ends, regions, owner)
    return Prepared(found, int(record["samples"]), inputs, record.get("error") or "")


def location_from_cell(cell: str) -> Path | ObjectUri:
    """What a report's path cell names: an object URI, or a local path."""
    return ObjectUri(cell) if is_uri(cell) else path_from_cell(cell)


def _optional_pairs(array: np.ndarray | None) -> list[np.ndarray] | None:
    """``[n, 2]`` as a list of 1-D pairs: Arrow takes lists of 1-D arrays, not 2-D ones."""
    return None if array is None else list(np.asarray(array, np.int64).reshape(-1, 2))


def _optional_array(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else np.asarray(array, np.int64)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)
