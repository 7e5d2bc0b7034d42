from pathlib import Path

import numpy as np
import pytest

from ser.corpus import (
    Clip,
    check_splits,
    label_indices,
    load_corpus,
    manifest_hash,
    ravdess_split,
    read_manifest,
    read_ravdess,
    select,
)
from ser.errors import CorpusError
from ser.labels import LABELS, label_index


def test_label_order_is_the_contract():
    assert LABELS == (
        "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised",
    )  # fmt: skip
    assert label_index("angry") == 4
    with pytest.raises(ValueError, match="expected one of neutral"):
        label_index("bored")


def test_label_indices_follow_the_given_order():
    clips = [Clip(Path(f"{label}.wav"), label) for label in ("sad", "neutral", "sad")]
    assert label_indices(clips).tolist() == [3, 0, 3]
    assert label_indices(clips).dtype == label_indices([]).dtype == np.int64  # torch targets
    assert label_indices(clips, ("sad", "neutral")).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="unknown label 'sad'; expected one of angry"):
        label_indices(clips, ("angry", "neutral"))


@pytest.mark.parametrize(
    ("actor", "split"), [(1, "train"), (20, "train"), (21, "validation"), (22, "validation"),
                         (23, "test"), (24, "test")],
)  # fmt: skip
def test_ravdess_split_by_actor(actor, split):
    assert ravdess_split(actor) == split


def test_ravdess_split_rejects_unknown_actor():
    with pytest.raises(CorpusError, match="outside 1-24"):
        ravdess_split(25)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_read_ravdess_parses_names_and_ignores_other_files(tmp_path):
    _touch(tmp_path / "Actor_01" / "03-01-05-02-01-01-01.wav")
    _touch(tmp_path / "Actor_22" / "03-01-08-01-02-02-22.flac")
    _touch(tmp_path / "Actor_24" / "03-01-01-01-01-01-24.mp3")
    _touch(tmp_path / "Actor_01" / "03-02-05-02-01-01-01.wav")  # song, not speech
    _touch(tmp_path / "Actor_01" / "notes.txt")
    clips = read_ravdess(tmp_path)
    assert [(c.label, c.speaker, c.split) for c in clips] == [
        ("angry", "actor01", "train"),
        ("surprised", "actor22", "validation"),
        ("neutral", "actor24", "test"),
    ]
    assert load_corpus(tmp_path) == clips


def test_read_ravdess_empty_folder_is_an_error(tmp_path):
    with pytest.raises(CorpusError, match="no RAVDESS speech clips"):
        read_ravdess(tmp_path)


def test_manifest_relative_paths_default_split_and_hash(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\na.wav,happy\n/abs/b.flac,sad\n")
    clips = read_manifest(tmp_path / "m.csv")
    assert clips[0].path == tmp_path / "a.wav"
    assert clips[1].path == Path("/abs/b.flac")
    assert {c.split for c in clips} == {"train"}
    assert manifest_hash(clips) == manifest_hash(list(reversed(clips)))
    assert manifest_hash(clips) != manifest_hash(clips[:1])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("path,label\na.wav,bored\n", "m.csv:2: unknown label 'bored'"),
        ("path,label,split\na.wav,sad,dev\n", "m.csv:2: unknown split 'dev'"),
        ("file,emotion\na.wav,sad\n", "at least 'path,label'"),
        ("", "at least 'path,label'"),
    ],
)
def test_manifest_errors_name_the_row(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(CorpusError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_check_splits_reports_missing_class_and_empty_split(tmp_path):
    rows = "".join(f"{label}.wav,{label},train\n" for label in LABELS[:-1])
    (tmp_path / "m.csv").write_text("path,label,split\n" + rows)
    clips = read_manifest(tmp_path / "m.csv")
    with pytest.raises(CorpusError, match="train split has no clips of class surprised"):
        check_splits(clips, ["train"])
    with pytest.raises(CorpusError, match="the test split is empty"):
        check_splits(clips, ["test"])
    assert select(clips, "test") == []
