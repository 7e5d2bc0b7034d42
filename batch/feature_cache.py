"""What pass 1 of speaker mode keeps of each scored file, on disk beside the report.

Speaker-adaptive scoring needs every item of a speaker before it can score any of them, and an
incremental run must re-score old rows of a speaker whose statistics moved without running the
encoder again. So each file's items are kept here: their frame features (the speaker heads'
input, float16), valid-frame masks, plain probabilities and time spans. Entries are keyed by
the report row's key (path, size, mtime, model, settings), written atomically, and a changed
file simply gets a new key.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser.batch.frontends import ModelInputs

REQUIRED_ARRAYS = {"frames", "valid", "probs", "starts", "ends", "samples"}


@dataclass(frozen=True)
class FileFeatures:
    """A scored file's items (one per model input row) as speaker mode needs them."""

    frames: np.ndarray  # [rows, members, frames, dim] float16: speaker heads' frame features
    valid: np.ndarray  # [rows, frames] bool
    probs: np.ndarray  # [rows, labels] float32: the plain head's probabilities
    starts: np.ndarray  # [rows] samples
    ends: np.ndarray  # [rows] samples
    samples: int
    regions: np.ndarray | None = None  # [regions, 2] samples (--segmentation vad)
    region_of_row: np.ndarray | None = None

    def geometry(self) -> ModelInputs:
        """The rows' spans as model inputs without audio (what aggregation reads)."""
        return ModelInputs(
            np.zeros((len(self.starts), 0), np.float32), self.starts, self.ends, self.regions,
            self.region_of_row, self.samples,
        )  # fmt: skip

    def item_span(self, row: int) -> tuple[int, int]:
        """The span a row speaks for: its speech region with vad, else its window."""
        if self.regions is not None:
            start, end = self.regions[self.region_of_row[row]]
            return int(start), int(end)
        return int(self.starts[row]), int(self.ends[row])

    @classmethod
    def join(cls, parts: list[FileFeatures], samples: int) -> FileFeatures:
        """One file's chunks (a streamed long file) as one record."""
        regions = [part.regions for part in parts if part.regions is not None]
        offsets = np.cumsum([0] + [len(r) for r in regions])[:-1]
        region_of_row = None
        if regions:
            region_of_row = np.concatenate(
                [part.region_of_row + offset for part, offset in zip(parts, offsets, strict=True)]
            )
        return cls(
            np.concatenate([part.frames for part in parts]),
            np.concatenate([part.valid for part in parts]),
            np.concatenate([part.probs for part in parts]),
            np.concatenate([part.starts for part in parts]),
            np.concatenate([part.ends for part in parts]),
            samples,
            np.concatenate(regions) if regions else None,
            region_of_row,
        )

    def to_bytes(self) -> bytes:
        arrays = {name: value for name, value in vars(self).items() if value is not None}
        arrays["samples"] = np.asarray(self.samples)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FileFeatures:
        with np.load(io.BytesIO(data)) as arrays:
            values = {name: arrays[name] for name in arrays.files}
        values["samples"] = int(values["samples"])
        return cls(**values)


class FeatureCache:
    """A folder of :class:`FileFeatures`, one ``.npz`` per report row key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @staticmethod
    def beside(report: Path) -> FeatureCache:
        return FeatureCache(report.with_name(report.name + ".features"))

    def _path(self, key: tuple[str, ...]) -> Path:
        digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:32]
        return self.folder / f"{digest}.npz"

    def has(self, key: tuple[str, ...]) -> bool:
        """Whether a whole entry is there (a truncated or foreign file is not: its row is scored
        again rather than kept without features)."""
        try:
            with np.load(self._path(key)) as arrays:
                return set(arrays.files) >= REQUIRED_ARRAYS
        except Exception:  # missing, truncated, not a zip: all mean "no entry"
            return False

    def get(self, key: tuple[str, ...]) -> FileFeatures | None:
        try:
            return FileFeatures.from_bytes(self._path(key).read_bytes())
        except Exception:  # missing or damaged in any way: score again
            return None

    def prune(self, keys: set[tuple[str, ...]]) -> int:
        """Remove entries of rows no longer in the report (changed or removed files); returns
        how many went. Run after the report is written, so a failed run prunes nothing."""
        wanted = {self._path(key).name for key in keys}
        removed = 0
        for entry in self.folder.glob("*.npz") if self.folder.is_dir() else ():
            if entry.name not in wanted:
                entry.unlink(missing_ok=True)
                removed += 1
        return removed

    def put(self, key: tuple[str, ...], features: FileFeatures) -> None:
        """Write atomically: a killed run leaves whole entries or none."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(key)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(features.to_bytes())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class MemoryFeatures:
    """A :class:`FeatureCache` held in memory (the Python API keeps no files)."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, ...], FileFeatures] = {}

    def has(self, key: tuple[str, ...]) -> bool:
        return key in self.entries

    def get(self, key: tuple[str, ...]) -> FileFeatures | None:
        return self.entries.get(key)

    def put(self, key: tuple[str, ...], features: FileFeatures) -> None:
        self.entries[key] = features
