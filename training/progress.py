"""Training feedback that reads well on a terminal and in a cron log alike.

On a terminal, tqdm draws a bar per stage. Anywhere else (cron, a log file, a pipe) there are no
carriage-return bars: a timestamped line when a stage starts, one at least every
``INTERVAL_S`` seconds while it runs (from a timer thread, so one slow step cannot hold the line
back), and one when it ends. Before the long work, :func:`announce_encoding` says what it will
cost: clips, windows to encode, the cache it writes and where.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

from tqdm import tqdm

INTERVAL_S = 30.0
NPZ_ENTRY_OVERHEAD = 600  # bytes: zip headers and array headers of one cache file

T = TypeVar("T")


def on_terminal(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def log(message: str, stream: IO[str] | None = None) -> None:
    """One timestamped line on stderr, flushed at once (cron mails and log files read it)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} ser-train: {message}", file=stream or sys.stderr, flush=True)


class Stage:
    """A counted stage (clips featurised, clips encoded, epochs): a bar or periodic lines.

    Use as a context manager and call :meth:`update` as work gets done, like a tqdm bar.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        *,
        detail: str = "",
        stream: IO[str] | None = None,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.desc, self.total, self.unit, self.done = desc, total, unit, 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._bar = self._timer = None
        if on_terminal(self.stream):
            if detail:
                log(f"{desc}: {detail}", self.stream)
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream)
            return
        log(f"{desc}: {total} {unit}s{'; ' + detail if detail else ''}", self.stream)
        self._timer = threading.Thread(target=self._beat, args=(interval_s,), daemon=True)
        self._timer.start()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def status(self) -> str:
        elapsed = time.monotonic() - self.started
        line = f"{self.desc}: {self.done}/{self.total} {self.unit}s"
        line += f" ({100 * self.done / max(self.total, 1):.0f}%), {_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            line += f", about {_duration(elapsed / self.done * (self.total - self.done))} left"
        return line

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            return
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        elapsed = _duration(time.monotonic() - self.started)
        log(f"{self.desc}: done, {self.done} {self.unit}s in {elapsed}", self.stream)

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _beat(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            log(self.status(), self.stream)


def track(items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
    """Iterate with a :class:`Stage` counting one ``unit`` per item."""
    with Stage(desc, len(items), unit) as stage:
        for item in items:
            yield item
            stage.update()


def announce_encoding(
    clips: Mapping[str, int], *, views: int, window_bytes: int, folder: Path
) -> None:
    """Say up front what encoding will cost: clips, windows, cache size on disk and where.

    ``clips`` counts clips per split; training clips are encoded ``views`` times.
    """
    windows = sum(count * (views if split == "train" else 1) for split, count in clips.items())
    entries = sum(clips.values())
    size = windows * window_bytes + entries * NPZ_ENTRY_OVERHEAD
    counts = ", ".join(f"{split} {count}" for split, count in clips.items())
    log(f"{entries} clips ({counts}); {windows} windows (training clips x {views} views)")
    log(
        f"encoder states cache: up to {human_bytes(size)} ({human_bytes(window_bytes)} a window) "
        f"in {folder}{_free_space(folder)}, and as much memory while the head trains; entries "
        "already there are reused. --views shrinks both, --cache-dir moves the cache, deleting "
        "the folder frees it"
    )


def quiet_library_bars(stream: IO[str] | None = None) -> None:
    """Turn off Hugging Face's own progress bars ("Loading weights") off a terminal."""
    if on_terminal(stream):
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()


def human_bytes(size: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    power = min(int(math.log(max(size, 1), 1000)), len(units) - 1)
    return f"{size / 1000**power:.{0 if power == 0 else 1}f} {units[power]}"


def _free_space(folder: Path) -> str:
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return ""
    return f" ({human_bytes(shutil.disk_usage(existing).free)} free there)"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
