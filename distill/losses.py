"""recover's loss: BatchNorm statistics matching (SRe2L / DeepInversion).

The losses of training on stored labels (KD at the KD temperature, soft cross-entropy, smoothed
one-hot targets) belong to the replay steps and live in `loaders.losses`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["BNStatsLoss"]


class BNStatsLoss:
    """Hooks every BatchNorm2d of a model; after a forward pass, `loss()` is
    Σ_l m_l (‖μ_batch − μ_running‖₂ + ‖σ²_batch − σ²_running‖₂), with m = `first_multiplier`
    for the first BN layer and 1 otherwise (SRe2L / DeepInversion feature-statistics matching).
    """

    def __init__(self, model: nn.Module, first_multiplier: float = 1.0) -> None:
        self.first_multiplier = first_multiplier
        self._losses: list[torch.Tensor] = []
        self._handles = [m.register_forward_hook(self._hook) for m in model.modules()
                         if isinstance(m, nn.BatchNorm2d)]
        if not self._handles:
            raise ValueError("model has no BatchNorm2d layer: BN statistics matching needs one")

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1).var(dim=1, unbiased=False)
        self._losses.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

    @property
    def num_layers(self) -> int:
        return len(self._handles)

    def loss(self) -> torch.Tensor:
        """The matching loss of the last forward pass (and forget it)."""
        if not self._losses:
            raise RuntimeError("no forward pass since the last loss()")
        first, *rest = self._losses
        total = self.first_multiplier * first + sum(rest, torch.zeros_like(first))
        self._losses = []
        return total

    def reset(self) -> None:
        self._losses = []

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

