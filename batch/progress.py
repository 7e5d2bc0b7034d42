"""Feedback for people and for cron: a progress bar on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm


class Progress:
    """Counts files; draws a bar on a TTY, else logs a line every ``interval_s`` seconds."""

    def __init__(self, total: int, *, stream: IO[str] | None = None, interval_s: float = 30.0):
        self.total, self.done, self.failed, self.audio_s = total, 0, 0, 0.0
        self.no_speech = 0
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self.started = self._last_log = time.monotonic()
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = (
            tqdm(total=total, unit="file", desc="scoring", file=self.stream)
            if interactive
            else None
        )

    def update(self, ok: bool, audio_s: float, no_speech: bool = False) -> None:
        """One more file: scored (``ok``, maybe with no speech found) or failed."""
        self.done += 1
        self.failed += not ok
        self.no_speech += no_speech
        self.audio_s += audio_s
        if self._bar is not None:
            self._bar.update(1)
            return
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            self.log(self._status(now))

    def close(self) -> str:
        """Stop the bar; returns the one-line summary."""
        if self._bar is not None:
            self._bar.close()
        wall = time.monotonic() - self.started
        if self.done == 0:
            return f"no file to score ({wall:.1f} s)"
        speed = f" ({self.audio_s / wall:.1f}x real time)" if self.audio_s and wall > 0 else ""
        silent = f" ({self.no_speech} without speech)" if self.no_speech else ""
        return (
            f"{self.done - self.failed} ok{silent}, {self.failed} failed, "
            f"{self.audio_s / 3600:.2f} h audio in {wall:.1f} s{speed}"
        )

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"{stamp} ser-batch: {message}", file=self.stream, flush=True)

    def _status(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-9)
        left = (self.total - self.done) / rate if rate else float("inf")
        return (
            f"{self.done}/{self.total} files ({100 * self.done / max(self.total, 1):.0f}%), "
            f"{self.failed} failed, {rate:.2f} files/s, about {left / 60:.0f} min left"
        )
