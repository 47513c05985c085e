"""``(images, targets)`` pairs for tuple-minded loops, and the criterion that applies each step's loss.

``for x, y in loader.pairs(): loss = criterion(model(x), y)`` works for soft, hard and blend
steps alike because the step travels in ``y``: a :class:`StepTargets` holds, per record, the
targets plus what the loss needs — the stored logits, the hard targets, the soft-loss weight
(1 soft, 0 hard, w blend), the drift gate, the temperature and the KL's scale — and the kind's name. Every
field is per record, so a ``DataLoader``'s default collate builds it from single records
(``loaders.torch_data``) and ``.to(device)`` moves it as Lightning and Accelerate move batches.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

import torch
import torch.nn.functional as F

from .losses import soft_cross_entropy
from .schedules import HARD
from .step import Step

if TYPE_CHECKING:
    from .replay import ReplayLoader


class StepTargets(NamedTuple):
    """``y`` of a pair: one step's targets and what its loss needs, one row per record.

    ``targets`` equals ``Step.targets``. ``logits`` has 0 columns in hard steps and
    ``hard_targets`` 0 columns when the images' classes are unknown. ``kind`` is a tuple of
    the step kind's name per record (``"soft"``, ``"hard"``, ``"blend"``).
    """

    targets: torch.Tensor  # (n, C) float32
    logits: torch.Tensor  # (n, C) stored teacher logits, or (n, 0)
    hard_targets: torch.Tensor  # (n, C) smoothed, mixed class targets, or (n, 0)
    soft_weight: torch.Tensor  # (n,) float32: weight of the KD term (1 soft, 0 hard, w blend)
    gate: torch.Tensor  # (n,) float32: drift gate * beta (0 where not gated)
    temperature: torch.Tensor  # (n,) float32
    kd_scale: torch.Tensor  # (n,) float32: T**2, or 1 where the KL goes without it (kd_t_squared=False)
    kind: tuple  # n strings

    @classmethod
    def from_step(cls, step: Step) -> "StepTargets":
        n, dev = len(step), step.images.device
        none = torch.zeros(n, 0, device=dev)
        soft_weight = 0.0 if step.kind == HARD else float(step.weight)
        gate = (step.gated.float() * step.drift_beta if step.gated is not None
                else torch.zeros(n, device=dev))
        T = float(step.temperature)
        return cls(step.targets, none if step.logits is None else step.logits,
                   none if step.hard_targets is None else step.hard_targets,
                   torch.full((n,), soft_weight, device=dev), gate, torch.full((n,), T, device=dev),
                   torch.full((n,), T * T if step.kd_t_squared else 1.0, device=dev), (step.kind,) * n)

    @property
    def step_kind(self) -> str:
        """The kind of the step these records come from (``"mixed"`` if records of several)."""
        kinds = set(self.kind)
        return kinds.pop() if len(kinds) == 1 else "mixed"

    def loss(self, student_logits: torch.Tensor) -> torch.Tensor:
        """Mean over records of ``w * ((1 - g) * KD + g * CE) + (1 - w) * CE`` — ``Step.loss`` per record."""
        s = student_logits.float()
        zero = torch.zeros(len(s), device=s.device)
        ce = (soft_cross_entropy(s, self.hard_targets, reduction="none") if self.hard_targets.shape[-1] else zero)
        if not self.logits.shape[-1]:  # a hard step
            return ce.mean()
        T = self.temperature.float()[:, None]
        log_p = F.log_softmax(self.logits.float() / T, dim=-1)
        kd = (log_p.exp() * (log_p - F.log_softmax(s / T, dim=-1))).sum(-1) * self.kd_scale.float()
        g, w = self.gate.float(), self.soft_weight.float()
        return (w * ((1.0 - g) * kd + g * ce) + (1.0 - w) * ce).mean()

    def to(self, device: torch.device | str, non_blocking: bool = False, **kwargs: Any) -> "StepTargets":
        """Every tensor on ``device`` (what ``y.to(device)``, Lightning and Accelerate call)."""
        return StepTargets(*(v.to(device, non_blocking=non_blocking, **kwargs) if isinstance(v, torch.Tensor) else v
                             for v in self))

    def cuda(self, device: int | None = None, non_blocking: bool = False) -> "StepTargets":
        return self.to(torch.device("cuda", device) if device is not None else "cuda", non_blocking=non_blocking)


class StepLoss(torch.nn.Module):
    """``criterion(output, y)``: the step's loss when ``y`` is a StepTargets or a Step; plain
    cross-entropy for class ids and soft cross-entropy for probabilities, so one criterion
    also serves a validation loop."""

    def forward(self, output: torch.Tensor, target: StepTargets | Step | torch.Tensor) -> torch.Tensor:
        if isinstance(target, (StepTargets, Step)):
            return target.loss(output)
        if not target.is_floating_point():
            return F.cross_entropy(output.float(), target)
        return soft_cross_entropy(output, target)


class LoaderView:
    """Another shape of a ReplayLoader's steps: ``len``, ``set_epoch`` and the state dict are the
    loader's (subclasses define ``__iter__``)."""

    def __init__(self, loader: "ReplayLoader"):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)


class StepPairs(LoaderView):
    """``loader.pairs()``: iterate ``(images, StepTargets)``."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, StepTargets]]:
        for step in self.loader:
            yield step.images, StepTargets.from_step(step)
