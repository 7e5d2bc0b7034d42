"""Run the frozen encoder once per clip and view, and keep its states on disk.

With the encoder frozen its output for a given window never changes, so training the head on
cached states costs seconds an epoch instead of an encoder pass per sample. Entries are keyed by
the audio file, the backbone, the window, the number of views and the augmentation, so any
change to those encodes again.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ser.audio import center_window, load_audio
from ser.corpus import Clip
from ser.training.augment import Augmentation, random_crop
from ser.training.backbones import SpeechEncoder
from ser.training.cache import ArrayCache, file_key
from ser.training.heads import valid_frames


@dataclass(frozen=True)
class EncodedClips:
    """States ``[clips, views, layers, frames, hidden]`` (float16), masks and class indices."""

    states: torch.Tensor
    valid: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]


def backbone_fingerprint(backbone: SpeechEncoder) -> str:
    """Identity of a backbone for cache keys: its source, configuration and frontend."""
    config = backbone.model.config if hasattr(backbone, "model") else backbone.encoder.config
    text = f"{backbone.source()}|{config.to_json_string()}|{getattr(backbone, 'pad_30s', '')}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clip_views(
    clip: Clip,
    window: int,
    views: int,
    augmentation: Augmentation | None,
    seed: int,
    train: bool,
) -> np.ndarray:
    """``[views, window]``: random (augmented) crops in training, else one centred window."""
    signal = load_audio(clip.path)
    if not train:
        return center_window(signal, window)[None, :]
    rng = np.random.default_rng([seed, zlib.crc32(str(clip.path).encode())])
    crops = []
    for _ in range(views):
        view = augmentation.apply(signal, rng) if augmentation else signal
        crops.append(random_crop(view, window, rng))
    return np.stack(crops)


def encode_clips(
    clips: Sequence[Clip],
    labels: Sequence[str],
    backbone: SpeechEncoder,
    cache: ArrayCache,
    *,
    window: int,
    views: int = 1,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    train: bool = False,
    batch_size: int = 16,
    desc: str = "encoding",
) -> EncodedClips:
    """Encoder states for every clip, from the cache where present."""
    views = views if train else 1
    fingerprint = backbone_fingerprint(backbone)
    frames = backbone.num_frames(window)
    keys = [
        file_key(clip.path, fingerprint, window, views, augmentation, seed, train) for clip in clips
    ]
    shape = (len(clips), views, backbone.num_layers, frames, backbone.hidden_size)
    states = np.empty(shape, dtype=np.float16)
    valid = np.empty((len(clips), views, frames), dtype=bool)
    missing = []
    for i, key in enumerate(keys):
        entry = cache.get(key)
        if entry is None or entry["states"].shape != shape[1:]:
            missing.append(i)
        else:
            states[i], valid[i] = entry["states"], entry["valid"]
    per_batch = max(1, batch_size // views)
    with tqdm(total=len(missing), desc=desc, unit="clip", disable=None if missing else True) as bar:
        for start in range(0, len(missing), per_batch):
            chunk = missing[start : start + per_batch]
            audio = torch.from_numpy(
                np.concatenate(
                    [clip_views(clips[i], window, views, augmentation, seed, train) for i in chunk]
                )
            )
            with torch.inference_mode():
                encoded = backbone(audio).to(torch.float16).numpy()
                mask = valid_frames(audio, backbone.samples_per_frame, frames).numpy()
            for n, i in enumerate(chunk):
                rows = slice(n * views, (n + 1) * views)
                states[i], valid[i] = encoded[rows], mask[rows]
                cache.put(keys[i], states=states[i], valid=valid[i])
            bar.update(len(chunk))
    return EncodedClips(
        states=torch.from_numpy(states),
        valid=torch.from_numpy(valid),
        targets=torch.tensor([labels.index(clip.label) for clip in clips]),
    )
