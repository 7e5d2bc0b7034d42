"""Speaker normalisation for training: each speaker's states judged against that speaker's mean.

A naturally loud or high voice shifts every frame of its speaker's states the same way; taking
the speaker's mean state away (per layer and channel, over the valid frames of all the speaker's
training windows) leaves what changes from clip to clip, which is where emotion lives (Pepino,
Riera and Ferrer 2021). The head's :meth:`~ser.training.heads.PooledHead.frame_features` are
affine in the states, so the same centring done at scoring time on those features (a speaker's
mean over its items, :mod:`ser.batch.speaker_stats`) gives exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ser.errors import CorpusError
from ser.training.encoding import EncodedClips

NORMALIZATIONS = ("none", "speaker")


def speaker_ids(speakers: Sequence[str], corpus: str) -> tuple[str, ...]:
    """Each clip's speaker, named within its corpus (two corpora may both have a speaker "1").

    Raises:
        CorpusError: when a clip has no speaker (a manifest without a ``speaker`` column).
    """
    missing = sum(not speaker for speaker in speakers)
    if missing:
        raise CorpusError(
            f"{missing} clips of {corpus} have no speaker; --normalize speaker needs a speaker "
            "column in the manifest (RAVDESS's actors are read from its file names)"
        )
    return tuple(f"{corpus}/{speaker}" for speaker in speakers)


def speaker_means(data: EncodedClips, speakers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each speaker's mean state ``[layers, hidden]`` over the valid frames of all its windows,
    on the device the states are on (the cache sits on the GPU when training there)."""
    names = np.asarray(speakers)
    means = {}
    for speaker in sorted(set(speakers)):
        rows = torch.from_numpy(np.flatnonzero(names == speaker))
        shape = (data.states.shape[2], data.states.shape[4])
        total = torch.zeros(shape, dtype=torch.float64, device=data.states.device)
        count = 0.0
        for row in rows.tolist():  # one clip at a time: its views' frames in float64
            weights = data.valid[row].to(total)[:, None, :, None]  # [views, 1, t, 1]
            total += (data.states[row].to(torch.float64) * weights).sum(dim=(0, 2))
            count += float(weights.sum())
        means[speaker] = (total / max(count, 1.0)).float()
    return means


def centre_by_speaker(data: EncodedClips, speakers: Sequence[str]) -> EncodedClips:
    """``data`` with each clip's speaker mean taken from its states (in place: the states are
    large, and the plain heads are trained before this is called)."""
    if len(speakers) != len(data):
        raise ValueError(f"{len(speakers)} speakers for {len(data)} clips")
    names = np.asarray(speakers)
    for speaker, mean in speaker_means(data, speakers).items():
        for row in np.flatnonzero(names == speaker).tolist():
            centred = data.states[row].float() - mean[None, :, None, :]
            data.states[row] = centred.to(data.states.dtype)
    return data
