"""The batch contract every modality shares: ``{"input_ids": LongTensor[b, t], "labels": LongTensor[b, t]}``.

Labels are the input ids themselves (the model shifts nothing; ``token_nll_sum`` does), with ``IGNORE_INDEX``
wherever nothing is learned (padding, a start-of-sequence token, a prompt that is only context).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def make_batch(ids: torch.Tensor, *, ignore_first: int = 0) -> dict[str, torch.Tensor]:
    """Batch of equal-length blocks ``ids[b, t]``; the first ``ignore_first`` positions carry no label."""
    labels = ids.clone()
    if ignore_first:
        labels[:, :ignore_first] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels}


def count_label_tokens(labels: torch.Tensor) -> int:
    """Number of predicted positions: labels after the one-position shift that are not ignored."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def token_nll_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy (nats): ``logits[b, t, v]`` at position i predicts ``labels[:, i + 1]``.

    Computed in float32 whatever the autocast dtype, so a loss near zero is resolved.
    """
    # Shift the labels, not the logits: logits[:, :-1] is not contiguous, and flattening it would copy every
    # float32 logit; the last position gets no label instead.
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    return F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
