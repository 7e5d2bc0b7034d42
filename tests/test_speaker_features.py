"""The pooled statistics the speaker head reads: a numpy reference, padding ignored, row alone."""

import numpy as np
import torch

from ser.training.speaker_features import VARIANCE_FLOOR, PooledStatistics


def _reference(states: np.ndarray, valid: np.ndarray) -> np.ndarray:
    rows = []
    for item, mask in zip(states, valid, strict=True):
        frames = item[:, mask, :]  # [layers, valid frames, hidden]
        mean = frames.mean(axis=1)
        std = np.sqrt(frames.var(axis=1) + VARIANCE_FLOOR)
        rows.append(np.concatenate([mean.ravel(), std.ravel()]))
    return np.stack(rows)


def test_pooled_statistics_match_numpy_and_ignore_padding_frames():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(4, 3, 20, 8)).astype(np.float64)
    valid = np.ones((4, 20), dtype=bool)
    valid[1, 12:] = False  # a short window's zero padding
    valid[3, :5] = False
    states[1, :, 12:, :] = 1e6  # whatever padding frames hold must not count
    pooled = PooledStatistics()(torch.from_numpy(states), torch.from_numpy(valid)).numpy()
    assert pooled.shape == (4, 2 * 3 * 8)
    np.testing.assert_allclose(pooled, _reference(states, valid), rtol=1e-12, atol=1e-12)


def test_each_row_is_pooled_alone_whatever_the_batch():
    rng = np.random.default_rng(1)
    states = torch.from_numpy(rng.normal(size=(6, 2, 10, 4)).astype(np.float32))
    valid = torch.from_numpy(rng.random((6, 10)) > 0.3)
    module = PooledStatistics()
    together = module(states, valid)
    for row in range(6):
        alone = module(states[row : row + 1], valid[row : row + 1])
        assert torch.equal(alone[0], together[row])
