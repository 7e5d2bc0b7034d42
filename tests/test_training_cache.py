"""The encoder-state cache follows the audio, not where it lies: a corpus copied elsewhere or
named by a relative path (new paths, new modification times) reuses every entry, and its
training views are the same ones; changed audio is encoded again."""

import os
import shutil
from dataclasses import replace

import numpy as np
import soundfile as sf
import torch

from ser.corpus import load_corpus, select
from ser.training.augment import Augmentation
from ser.training.backbones import load_backbone
from ser.training.cache import ArrayCache, file_key
from ser.training.encoding import clip_views, encode_clips


def _encode(clips, backbone, cache):
    labels = sorted({clip.label for clip in clips})
    return encode_clips(
        clips, labels, backbone, cache, window=16_000, views=2, train=True,
        augmentation=Augmentation(noise_p=0.5, stretch_p=0.5),
    )  # fmt: skip


def test_a_copied_corpus_under_a_relative_path_reuses_the_cache_and_its_views(
    synthetic_manifest, tiny_whisper, tmp_path, monkeypatch
):
    clips = select(load_corpus(synthetic_manifest), "train")[:6]
    backbone = load_backbone(str(tiny_whisper))
    cache = ArrayCache(tmp_path / "cache", "states")
    original = _encode(clips, backbone, cache)
    assert cache.misses == len(clips)

    copies = tmp_path / "elsewhere"
    copies.mkdir()
    for clip in clips:
        shutil.copy(clip.path, copies / clip.path.name)  # new path, new modification time
    monkeypatch.chdir(tmp_path)
    moved = [replace(clip, path=(copies / clip.path.name).relative_to(tmp_path)) for clip in clips]
    assert not moved[0].path.is_absolute()

    again = _encode(moved, backbone, cache)
    assert cache.hits == len(clips)
    assert torch.equal(again.states, original.states)

    cold = _encode(moved, backbone, ArrayCache(tmp_path / "cold", "states"))
    assert torch.equal(cold.states, original.states)  # views drawn from the audio, not the path
    views = clip_views(moved[0], 16_000, 2, Augmentation(), 0, True)
    assert np.array_equal(views, clip_views(clips[0], 16_000, 2, Augmentation(), 0, True))


def test_changed_audio_gets_a_new_key(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(1600, np.float32), 16_000)
    before = file_key(path, "encoder", 4)
    assert file_key(path, "encoder", 5) != before
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert file_key(path, "encoder", 4) == before  # touched, same audio: same key
    sf.write(path, np.full(1600, 0.1, np.float32), 16_000)
    assert file_key(path, "encoder", 4) != before
