"""Checks that run before any long training work, so bad input fails in seconds."""

from __future__ import annotations

from collections.abc import Sequence

from ser.audio import audio_duration
from ser.corpus import Clip
from ser.errors import AudioError, CorpusError


def check_readable(clips: Sequence[Clip]) -> float:
    """Read every clip's header; returns the total duration in seconds.

    Raises:
        CorpusError: naming the first clip that cannot be opened or is empty.
    """
    total = 0.0
    for clip in clips:
        try:
            seconds = audio_duration(clip.path)
        except AudioError as error:
            raise CorpusError(f"unreadable clip in corpus: {error}") from None
        if seconds <= 0:
            raise CorpusError(f"unreadable clip in corpus: {clip.path}: no audio samples")
        total += seconds
    return total
