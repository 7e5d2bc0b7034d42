"""Run the frozen encoder once per clip and view, and keep its states on disk.

With the encoder frozen its output for a given window never changes, so training the head on
cached states costs seconds an epoch instead of an encoder pass per sample. Entries are keyed by
the audio file, the backbone, the window, the number of views and the augmentation, so any
change to those encodes again (and so does autocast: states encoded in bf16 or fp16 are kept
apart from float32 ones).

On a GPU the encoder is rarely what takes the time: decoding and augmenting the clips is. So
the views of the next batches are prepared by ``workers`` threads while the current batch is
encoded (each clip's views depend only on its audio and the seed, never on its path or the thread).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ser.audio import center_window, load_audio
from ser.corpus import Clip, label_indices
from ser.training.augment import Augmentation, random_crop
from ser.training.backbones import SpeechEncoder
from ser.training.cache import ArrayCache, content_digest, file_key
from ser.training.devices import encoder_arithmetic
from ser.training.heads import valid_frames
from ser.training.progress import Stage, human_bytes


@dataclass(frozen=True)
class EncodedClips:
    """States ``[clips, views, layers, frames, hidden]`` (float16), masks and class indices."""

    states: torch.Tensor
    valid: torch.Tensor
    targets: torch.Tensor
    speakers: tuple[str, ...] = ()  # as given in the manifest ("" where it has none)

    def __len__(self) -> int:
        return self.states.shape[0]


def window_bytes(backbone: SpeechEncoder, window: int) -> int:
    """What one encoded window takes in the cache: float16 states and the frame mask."""
    frames = backbone.num_frames(window)
    return backbone.num_layers * frames * backbone.hidden_size * 2 + frames


def backbone_fingerprint(backbone: SpeechEncoder) -> str:
    """Identity of a backbone for cache keys: its source, configuration and frontend."""
    return hashlib.sha256(backbone.cache_identity().encode()).hexdigest()[:16]


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
    rng = np.random.default_rng([seed, int(content_digest(clip.path)[:16], 16)])
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
    device: torch.device | None = None,
    precision: str = "fp32",
    workers: int = 1,
) -> EncodedClips:
    """Encoder states for every clip, from the cache where present.

    ``backbone`` must already be on ``device`` (default: the CPU); ``precision`` is ``fp32`` or
    an autocast type (``bf16``, ``fp16``); ``workers`` threads prepare views ahead.
    """
    device = device or torch.device("cpu")
    views = views if train else 1
    fingerprint = backbone_fingerprint(backbone)
    frames = backbone.num_frames(window)
    tags = () if precision == "fp32" else (precision,)  # float32 keys stay as they always were
    keys = [
        file_key(clip.path, fingerprint, window, views, augmentation, seed, train, *tags)
        for clip in clips
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
    chunks = [missing[start : start + per_batch] for start in range(0, len(missing), per_batch)]

    def chunk_audio(chunk: list[int]) -> np.ndarray:
        return np.concatenate(
            [clip_views(clips[i], window, views, augmentation, seed, train) for i in chunk]
        )

    prepared = prepare_ahead(chunks, chunk_audio, workers)
    writes = human_bytes(len(missing) * views * window_bytes(backbone, window))
    detail = f"{len(missing) * views} windows to encode, {len(clips) - len(missing)} clips cached"
    with Stage(desc, len(missing), "clip", detail=f"{detail}; writing {writes}") as bar:
        for chunk, samples in zip(chunks, prepared, strict=True):
            audio = torch.from_numpy(samples)
            with torch.inference_mode(), encoder_arithmetic(device, precision):
                output = backbone(audio.to(device))
            with torch.inference_mode():
                encoded = output.to(torch.float16).cpu().numpy()
                mask = valid_frames(audio, backbone.samples_per_frame, frames).numpy()
            for n, i in enumerate(chunk):
                rows = slice(n * views, (n + 1) * views)
                states[i], valid[i] = encoded[rows], mask[rows]
                cache.put(keys[i], states=states[i], valid=valid[i])
            bar.update(len(chunk))
    return EncodedClips(
        states=torch.from_numpy(states),
        valid=torch.from_numpy(valid),
        targets=torch.from_numpy(label_indices(clips, labels)),
        speakers=tuple(clip.speaker for clip in clips),
    )


def prepare_ahead(
    items: Sequence[list[int]], prepare: Callable[[list[int]], np.ndarray], workers: int
) -> Iterator[np.ndarray]:
    """``prepare(item)`` for each item, in order, computed up to ``2 x workers`` items ahead.

    With one worker it runs in the caller's thread, as before. Decoding (libsndfile, soxr) and
    most of librosa's phase vocoder (numpy) release the GIL, so threads overlap both with each
    other and with the encoder.
    """
    if workers <= 1:
        yield from map(prepare, items)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ser-views") as pool:
        in_flight: deque = deque()
        for item in items:
            in_flight.append(pool.submit(prepare, item))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
