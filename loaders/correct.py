"""Label correction: stored logits whose top-1 is not the record's class, made to rank it first.

HALD's premise is that a drifting crop (teacher top-1 != the image's class) teaches the wrong
class. Replacing its soft label by the hard one (drift gating) throws away the teacher's
distribution; correcting keeps it and only moves the class to the top:

- ``swap``: exchange the logits of the teacher's top-1 and of the class (knowledge
  adjustment in knowledge distillation): the distribution's shape is kept, two entries trade places;
- ``raise``: lift the class's logit to the top-1's plus ``margin`` (the next float above it
  for ``margin=0``): the least change that makes the class the top-1.

In a mixed batch (CutMix / Mixup of the stored record with a partner), a top-1 that is
either image's class is right; otherwise the class of the larger part (``lam >= 0.5``: the
record's own image) is promoted. Pure tensor ops: no host sync, any device.
"""
from __future__ import annotations

import torch

from labelstore import LabelStoreError

CORRECT_MODES = ("swap", "raise")


def correct_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    mode: str = "swap",
    margin: float = 0.0,
    partner_labels: torch.Tensor | None = None,
    lam: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(corrected float32 logits, rows changed)`` for ``(n, C)`` logits and ``(n,)`` class ids.

    ``partner_labels`` / ``lam``: the classes of the records' mixing partners and the weight
    of the records' own images, for a mixed batch.
    """
    if mode not in CORRECT_MODES:
        raise LabelStoreError(f"unknown correction mode {mode!r}; use one of {', '.join(CORRECT_MODES)}")
    if margin < 0:
        raise LabelStoreError(f"the correction margin must be >= 0, got {margin}")
    x = logits.float()
    labels = labels.long().to(x.device)
    top = x.argmax(-1)
    right = top == labels
    target = labels
    if partner_labels is not None:
        partner_labels = partner_labels.long().to(x.device)
        right = right | (top == partner_labels)
        if lam < 0.5:  # the partner's image covers most of the mixed one
            target = partner_labels
    wrong = ~right
    lt = x.gather(1, target[:, None])[:, 0]
    lm = x.gather(1, top[:, None])[:, 0]
    out = x.clone()
    if mode == "swap":
        out.scatter_(1, top[:, None], torch.where(wrong, lt, lm)[:, None])
        out.scatter_(1, target[:, None], torch.where(wrong, lm, lt)[:, None])
    else:
        lifted = torch.nextafter(lm, torch.full_like(lm, float("inf"))) if margin == 0 else lm + float(margin)
        out.scatter_(1, target[:, None], torch.where(wrong, lifted, lt)[:, None])
    return out, wrong  # float32: a raise by the next float must not round away in fp16
