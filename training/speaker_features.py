"""Pooled statistics of the encoder states: what speaker-adaptive scoring keeps of each item.

The plain head reads every frame; the speaker head reads one vector per item, small enough to
cache beside a report and to standardise by each speaker's statistics: the mean and standard
deviation of every layer's states over the item's valid frames (the pooled features that
Pepino, Riera and Ferrer 2021 normalise per speaker). A torch module, so that the exported
graph computes exactly what training computed, and each row of a batch alone.
"""

from __future__ import annotations

import torch
from torch import nn

VARIANCE_FLOOR = 1e-8


class PooledStatistics(nn.Module):
    """``states [batch, layers, frames, hidden]``, ``valid [batch, frames]`` to
    ``[batch, 2 x layers x hidden]``: each layer's mean, then each layer's standard deviation."""

    def forward(self, states: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        weights = valid.to(states.dtype)[:, None, :, None]  # [b, 1, t, 1]
        count = weights.sum(dim=2).clamp(min=1.0)  # [b, 1, 1]
        mean = (states * weights).sum(dim=2) / count  # [b, layers, hidden]
        centred = (states - mean[:, :, None, :]) * weights
        std = torch.sqrt((centred**2).sum(dim=2) / count + VARIANCE_FLOOR)
        return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)
