"""A content-keyed on-disk cache of numpy arrays (features, encoder hidden states).

Keys hash the audio file's bytes together with everything that shapes the array (feature set and
version, backbone, window, augmentation), so a changed file or a changed model can never return a
stale array, while the same corpus copied, re-synced or spelled by another path (which changes
modification times and paths, not audio) keeps its cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ser.files import publish


def default_cache_dir() -> Path:
    """``$SER_CACHE_DIR``, else ``$XDG_CACHE_HOME/ser``, else ``~/.cache/ser``."""
    if "SER_CACHE_DIR" in os.environ:
        return Path(os.environ["SER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ser"


@functools.lru_cache(maxsize=65536)
def _digest(resolved: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(resolved, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: Path) -> str:
    """SHA-256 of the file's bytes, read once per process while the file stays unchanged."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def file_key(path: Path, *parts: object) -> str:
    """A hex key for the audio in ``path`` (its bytes, not its name) and configuration ``parts``."""
    text = "\x1f".join([content_digest(path), *map(str, parts)])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ArrayCache:
    """Named arrays stored as one ``.npz`` file per key under ``root/namespace``."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.folder = Path(root) / namespace
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.folder / key[:2] / f"{key}.npz"
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError):
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def put(self, key: str, **arrays: np.ndarray) -> None:
        """Store atomically: a crash never leaves a half-written entry behind."""
        folder = self.folder / key[:2]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".tmp", delete=False) as handle:
            np.savez(handle, **arrays)
        publish(handle.name, folder / f"{key}.npz")
