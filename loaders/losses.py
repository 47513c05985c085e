"""The losses a replay step needs: KD at temperature T, soft cross-entropy, smoothed targets.

Mixing is handled before these see anything: in a soft step the stored labels already
describe the mixed image (SRe2L relabels the mixed crop), so they are used as they are; in a
hard step the targets are mixed linearly (``loaders.mixing.mix_targets``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labelstore import LabelStoreError


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None = None,
    *,
    teacher_probs: torch.Tensor | None = None,
    temperature: float = 4.0,
    reduction: str = "batchmean",
    t_squared: bool = True,
) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) * T**2``; pass stored logits or probabilities at T.

    ``reduction``: ``"batchmean"`` (sum over classes, mean over records) or ``"none"`` (per record).
    ``t_squared=False`` leaves out Hinton's ``T**2`` (HALD's and SRe2L's scripts call
    ``KLDivLoss(reduction='batchmean')`` without it): the same direction, gradients ``1/T**2`` as large.
    """
    if temperature <= 0:
        raise LabelStoreError(f"temperature must be positive, got {temperature}")
    if (teacher_logits is None) == (teacher_probs is None):
        raise LabelStoreError("pass exactly one of teacher_logits or teacher_probs")
    s = student_logits.float()
    log_q = F.log_softmax(s / temperature, dim=-1)
    if teacher_probs is None:
        log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
        p = log_p.exp()
        per = (p * (log_p - log_q)).sum(-1)
    else:
        p = teacher_probs.float()
        per = (torch.xlogy(p, p) - p * log_q).sum(-1)  # 0 log 0 = 0
    if t_squared:
        per = per * (temperature * temperature)
    return _reduce(per, reduction)


def soft_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against probability targets: ``-sum(y * log_softmax(s))``, mean over records."""
    per = -(targets.float() * F.log_softmax(student_logits.float(), dim=-1)).sum(-1)
    return _reduce(per, reduction)


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``(1 - eps) * onehot + eps / C`` (float32)."""
    if not 0.0 <= smoothing < 1.0:
        raise LabelStoreError(f"label smoothing must be in [0, 1), got {smoothing}")
    y = F.one_hot(labels.long(), num_classes).float()
    return y * (1.0 - smoothing) + smoothing / num_classes


def _reduce(per: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction in ("mean", "batchmean"):
        return per.mean()
    if reduction == "sum":
        return per.sum()
    if reduction == "none":
        return per
    raise LabelStoreError(f"unknown reduction {reduction!r}; use 'batchmean', 'mean', 'sum' or 'none'")
