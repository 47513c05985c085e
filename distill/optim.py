"""The learning-rate schedule every stage uses: cosine decay to zero per step, after an optional
linear warm-up (squeeze), as SRe2L and the papers' students do (recover, train); and AdamW's
parameter groups."""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_lr", "set_lr", "param_groups"]


def cosine_lr(step: int, total: int, base: float, warmup: int = 0, eta: float = 1.0) -> float:
    """The learning rate at `step` of `total`: `base * (step + 1) / warmup` during the first
    `warmup` steps, then `base * (1 + cos(pi * t / eta)) / 2` with t going from 0 to 1 (and staying
    at 1). `eta` stretches the curve (HALD's and CV-DD's eta 2 end at half the learning rate)."""
    if step < warmup:
        return base * (step + 1) / warmup
    span = max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / (span * eta)))


def param_groups(model: torch.nn.Module, weight_decay: float, decay_1d: bool = True) -> list[dict]:
    """AdamW's parameter groups: every parameter decayed, or (decay_1d=False) only weights of
    more than one dimension, as the papers' `get_parameters` does (no decay on biases and norms)."""
    if decay_1d:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Give every parameter group of `opt` the learning rate `lr`."""
    for group in opt.param_groups:
        group["lr"] = lr
