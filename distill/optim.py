"""The learning-rate schedule every stage uses: cosine decay to zero per step, after an optional
linear warm-up (squeeze), as SRe2L and the papers' students do (recover, train)."""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_lr", "set_lr"]


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    """The learning rate at `step` of `total`: `base * (step + 1) / warmup` during the first
    `warmup` steps, then `base * (1 + cos(pi * t)) / 2` with t going from 0 to 1 (and staying at 1)."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of `opt` the learning rate `lr`."""
    for group in opt.param_groups:
        group["lr"] = lr
