"""Corpora as lists of :class:`Clip`: the RAVDESS folder layout and a generic CSV manifest.

RAVDESS clips are split by actor so that no speaker is heard in two splits: actors 1-20 train,
21-22 validation, 23-24 test. A manifest brings its own ``split`` column, or none (then every
clip is ``train``). Several corpora can be loaded into one list (:func:`load_corpora`): every
clip then names its corpus, and each corpus keeps its own splits and its own label set.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ser.audio import AUDIO_EXTENSIONS
from ser.errors import CorpusError
from ser.labels import LABELS, label_index

SPLITS = ("train", "validation", "test")
RAVDESS_EMOTIONS = dict(zip(("01", "02", "03", "04", "05", "06", "07", "08"), LABELS, strict=True))
_RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class Clip:
    """One labelled recording."""

    path: Path
    label: str
    speaker: str = ""
    split: str = "train"
    corpus: str = ""


def ravdess_split(actor: int) -> str:
    """The speaker-independent split of an actor: 1-20 train, 21-22 validation, 23-24 test."""
    if 1 <= actor <= 20:
        return "train"
    if actor in (21, 22):
        return "validation"
    if actor in (23, 24):
        return "test"
    raise CorpusError(f"RAVDESS actor {actor} is outside 1-24")


def read_ravdess(root: str | Path) -> list[Clip]:
    """Every RAVDESS speech clip under ``root`` (``Actor_XX/03-01-EE-II-SS-RR-AA.*``), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a directory")
    clips = []
    for path in sorted(root.glob("Actor_*/*")):
        match = _RAVDESS_NAME.match(path.stem)
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not match:
            continue
        modality, channel, emotion, *_, actor = match.groups()
        if (modality, channel) != ("03", "01") or emotion not in RAVDESS_EMOTIONS:
            continue
        clips.append(
            Clip(path, RAVDESS_EMOTIONS[emotion], f"actor{actor}", ravdess_split(int(actor)))
        )
    if not clips:
        raise CorpusError(f"{root}: no RAVDESS speech clips (Actor_XX/03-01-*.wav|flac) found")
    return clips


def read_manifest(path: str | Path, labels: Sequence[str] = LABELS) -> list[Clip]:
    """Clips from a CSV with columns ``path,label[,speaker][,split]``.

    Relative paths are taken from the manifest's folder. Raises CorpusError naming the row for an
    unknown label or split.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise CorpusError(f"{path}: cannot read manifest ({error.strerror})") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise CorpusError(f"{path}: a manifest needs a header with at least 'path,label' and rows")
    clips = []
    for number, row in enumerate(rows, start=2):
        label, split = row["label"].strip(), (row.get("split") or "train").strip()
        if label not in labels:
            raise CorpusError(
                f"{path}:{number}: unknown label {label!r}; expected {', '.join(labels)}"
            )
        if split not in SPLITS:
            raise CorpusError(
                f"{path}:{number}: unknown split {split!r}; expected {', '.join(SPLITS)}"
            )
        clip_path = Path(row["path"].strip())
        clip_path = clip_path if clip_path.is_absolute() else path.parent / clip_path
        clips.append(Clip(clip_path, label, (row.get("speaker") or "").strip(), split))
    return clips


def load_corpus(source: str | Path) -> list[Clip]:
    """A RAVDESS folder or a ``.csv`` manifest, whichever ``source`` is."""
    source = Path(source)
    if source.suffix.lower() == ".csv":
        return read_manifest(source)
    return read_ravdess(source)


def corpus_name(source: str | Path) -> str:
    """A corpus's name: its folder's, or its manifest's (the folder's for ``manifest.csv``)."""
    source = Path(source)
    if source.suffix.lower() != ".csv":
        return source.resolve().name
    return source.resolve().parent.name if source.stem == "manifest" else source.stem


def load_corpora(sources: Sequence[str | Path]) -> list[Clip]:
    """Every corpus of ``sources`` in one list, each clip tagged with its corpus's name.

    Names are made unique (``name-2``, ...) when two sources would share one.

    Raises:
        CorpusError: for no source, or any corpus that cannot be read.
    """
    if not sources:
        raise CorpusError("no corpus given; pass --data at least once")
    clips: list[Clip] = []
    names: list[str] = []
    for source in sources:
        name = base = corpus_name(source)
        suffix = 2
        while name in names:
            name, suffix = f"{base}-{suffix}", suffix + 1
        names.append(name)
        clips += [replace(clip, corpus=name) for clip in load_corpus(source)]
    return clips


def corpus_names(clips: Iterable[Clip]) -> list[str]:
    """The corpora of ``clips`` in order of first appearance."""
    return list(dict.fromkeys(clip.corpus for clip in clips))


def label_set(clips: Iterable[Clip], corpus: str, labels: Sequence[str] = LABELS) -> list[str]:
    """The classes a corpus teaches: those of its training clips, in ``labels`` order."""
    present = {clip.label for clip in clips if clip.corpus == corpus and clip.split == "train"}
    return [label for label in labels if label in present]


def select(clips: Iterable[Clip], *splits: str) -> list[Clip]:
    """The clips whose split is one of ``splits``."""
    return [clip for clip in clips if clip.split in splits]


def check_splits(
    clips: Sequence[Clip], splits: Sequence[str], labels: Sequence[str] = LABELS
) -> None:
    """Fail before any long work if a split is empty or lacks a class.

    Raises:
        CorpusError: naming the split and the missing classes.
    """
    for split in splits:
        present = {clip.label for clip in clips if clip.split == split}
        if not present:
            raise CorpusError(f"the {split} split is empty")
        missing = [label for label in labels if label not in present]
        if missing:
            raise CorpusError(f"the {split} split has no clips of class {', '.join(missing)}")


def check_corpora(
    clips: Sequence[Clip], splits: Sequence[str], labels: Sequence[str] = LABELS
) -> None:
    """:func:`check_splits` for one corpus; for several, checks that allow partial label sets.

    With several corpora each needs a non-empty split of every kind in ``splits``, whose classes
    are among those its training split teaches, and together their training splits must cover
    every class in ``labels``.

    Raises:
        CorpusError: naming the corpus, the split and the classes at fault.
    """
    names = corpus_names(clips)
    if len(names) <= 1:
        check_splits(clips, splits, labels)
        return
    for name in names:
        own = [clip for clip in clips if clip.corpus == name]
        taught = set(label_set(own, name, labels))
        for split in splits:
            present = {clip.label for clip in own if clip.split == split}
            if not present:
                raise CorpusError(f"corpus {name}: the {split} split is empty")
            untaught = [label for label in labels if label in present - taught]
            if untaught:
                raise CorpusError(
                    f"corpus {name}: the {split} split has class {', '.join(untaught)}, "
                    "which its train split lacks"
                )
    covered = {clip.label for clip in clips if clip.split == "train"}
    missing = [label for label in labels if label not in covered]
    if missing:
        raise CorpusError(f"no corpus's train split has clips of class {', '.join(missing)}")


def manifest_hash(clips: Iterable[Clip]) -> str:
    """A short hash of what a model was trained and tested on (names, labels, splits)."""
    digest = hashlib.sha256()
    for clip in sorted(clips, key=lambda c: (c.split, c.path.name, c.label)):
        digest.update(f"{clip.path.name}\t{clip.label}\t{clip.speaker}\t{clip.split}\n".encode())
    return digest.hexdigest()[:16]


def label_indices(clips: Iterable[Clip], labels: Sequence[str] = LABELS) -> np.ndarray:
    """Each clip's class as its index in ``labels`` (a model's output order); a ValueError
    names a label that is not there."""
    labels = tuple(labels)
    return np.array([label_index(clip.label, labels) for clip in clips], dtype=np.int64)
