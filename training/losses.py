"""Training losses for corpora that teach only some of the classes.

A corpus without a calm class says nothing about calm: its clips are not evidence that speech
is "never calm". Plain cross-entropy over all classes still pushes calm down on every such clip.
The ``restricted`` loss takes the softmax over the clip's corpus label set only, so a clip
teaches the choice among the classes its corpus could have labelled; with label smoothing, the
smoothed mass goes to those classes alone. For a corpus that has every class both are the same.

Measured on RAVDESS + nEMO (README "Several corpora"), ``plain`` won on validation: a scorer does
not know the corpus, and a head never told that Polish speech is not calm predicts calm for it.
"""

from __future__ import annotations

import torch

LOSSES = ("plain", "restricted")
_EXCLUDED = -1e4  # a logit that softmax turns into exactly 0 in float32, without inf * 0 = nan


def corpus_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    allowed: torch.Tensor,
    *,
    kind: str,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean loss over a batch; ``allowed`` ``[batch, classes]`` marks each clip's label set.

    Raises:
        ValueError: for an unknown ``kind``, listing the known ones.
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; expected {', '.join(LOSSES)}")
    if kind == "plain":
        allowed = torch.ones_like(allowed)
    log_probs = torch.log_softmax(logits.float().masked_fill(~allowed, _EXCLUDED), dim=-1)
    target_term = log_probs.gather(1, targets[:, None])[:, 0]
    share = allowed.float() / allowed.sum(dim=1, keepdim=True)
    smooth_term = (log_probs * share).sum(dim=1)
    return -((1 - label_smoothing) * target_term + label_smoothing * smooth_term).mean()
