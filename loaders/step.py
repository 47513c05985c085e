"""One training step as the loaders hand it out, and one planned batch of an epoch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from labelstore import Mix

from .backend import CropBatch
from .losses import kd_loss, soft_cross_entropy
from .schedules import BLEND, HARD, StepPlan


class Step:
    """One training step: ``loss = step.loss(model(step.images))``.

    ``targets`` (computed when first read; training needs only ``loss``): soft steps, stored
    probabilities ``softmax(logits / temperature)`` with drift-gated rows blended with their
    hard label (``logits`` are already corrected on ``|correct`` steps); hard steps, smoothed
    (and CutMix-mixed) one-hot targets. ``weight`` is the
    soft-loss weight of a blend step (1 otherwise).
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor | None,
        kind: str,
        epoch: int,
        batch: int,
        weight: float,
        temperature: float,
        indices: np.ndarray,
        logits: torch.Tensor | None = None,
        hard_targets: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        gated: torch.Tensor | None = None,
        drift_beta: float | None = None,
        stored: tuple[int, int] | None = None,
        mix: Mix | None = None,
        crops: CropBatch | None = None,
        kd_t_squared: bool = True,
        corrected: torch.Tensor | None = None,
    ):
        self.images = images
        self._targets = targets
        self.kind = kind
        self.epoch, self.batch = epoch, batch
        self.weight, self.temperature = weight, temperature
        self.indices = indices  # image ids, in batch positions
        self.logits = logits  # stored teacher logits (soft / blend)
        self.hard_targets = hard_targets  # smoothed, mixed class targets (hard / blend / drift)
        self.labels = labels  # class ids of the images, when known
        self.gated = gated  # drift gating: rows whose stored top-1 != true class
        self.drift_beta = drift_beta
        self.stored = stored  # (stored epoch, stored batch) a soft step replays
        self.mix = mix
        self.crops = crops  # the records' image ids, boxes and flips
        self.kd_t_squared = kd_t_squared  # Hinton's T**2 on the KL (HALD's and SRe2L's scripts leave it out)
        self.corrected = corrected  # label correction: rows whose stored top-1 was moved to their class

    @property
    def targets(self) -> torch.Tensor | None:
        if self._targets is None and self.logits is not None:
            probs = torch.softmax(self.logits / self.temperature, dim=-1)
            if self.gated is not None:
                g = self.gated.float()[:, None] * self.drift_beta
                probs = (1.0 - g) * probs + g * self.hard_targets
            self._targets = probs
        return self._targets

    @targets.setter
    def targets(self, value: torch.Tensor | None) -> None:
        self._targets = value

    def __len__(self) -> int:
        return len(self.indices)

    def loss(self, student_logits: torch.Tensor) -> torch.Tensor:
        """The loss this step calls for, as a scalar tensor (computed in float32)."""
        if self.kind == HARD:
            return soft_cross_entropy(student_logits, self.hard_targets)
        kd = kd_loss(student_logits, self.logits, temperature=self.temperature, reduction="none",
                     t_squared=self.kd_t_squared)
        if self.gated is not None:  # no .any() check: it would sync the GPU every step
            g = self.gated.float() * self.drift_beta
            kd = (1.0 - g) * kd + g * soft_cross_entropy(student_logits, self.hard_targets, reduction="none")
        kd = kd.mean()
        if self.kind == BLEND:
            return self.weight * kd + (1.0 - self.weight) * soft_cross_entropy(student_logits, self.hard_targets)
        return kd

    def select(self, rows: slice | np.ndarray) -> "Step":
        """The same step restricted to some batch positions (a rank's part of a split batch)."""
        part = Step(self.images[rows], None if self._targets is None else self._targets[rows], self.kind, self.epoch,
                    self.batch, self.weight, self.temperature, np.asarray(self.indices)[rows], drift_beta=self.drift_beta,
                    stored=self.stored, mix=self.mix, kd_t_squared=self.kd_t_squared)
        if self.crops is not None:
            c = self.crops
            part.crops = CropBatch(np.asarray(c.indices)[rows], np.asarray(c.boxes)[rows], np.asarray(c.flips)[rows])
        for name in ("logits", "hard_targets", "labels", "gated", "corrected"):
            v = getattr(self, name)
            setattr(part, name, None if v is None else v[rows])
        return part

    def __repr__(self) -> str:
        where = f", replays stored {self.stored}" if self.stored is not None else ""
        return (f"<Step {self.kind} epoch {self.epoch} batch {self.batch}: {len(self)} images "
                f"{tuple(self.images.shape)} {str(self.images.dtype).replace('torch.', '')} on {self.images.device}{where}>")


@dataclass
class PlannedBatch:
    """One batch of an epoch's plan: its StepPlan, the stored batch it replays (None: hard), its size."""

    batch: int
    plan: StepPlan
    stored: tuple[int, int] | None
    size: int
