"""Schedule modifiers: any schedule plus drift gating (``|drift``) or label correction
(``|correct``) on its soft steps; parsed by :mod:`loaders.schedules`."""
from __future__ import annotations

from labelstore import LabelStoreError

from ._phases import Schedule, StepPlan, fmt_number

class DriftGated(Schedule):
    """Any schedule, plus drift gating on its soft steps.

    A record whose stored teacher top-1 differs from the image's true class gets its hard
    label instead (``beta=1``) or ``(1 - beta) * soft + beta * hard`` loss. Needs class labels.
    """

    def __init__(self, base: Schedule, beta: float = 1.0):
        if isinstance(base, DriftGated):
            raise LabelStoreError("drift gating is already on")
        if isinstance(base, Corrected):
            raise LabelStoreError("use one of '|drift' (replace a drifting crop's label by the hard one) and "
                                  "'|correct' (keep it, with the class made top-1), not both")
        self.base, self.beta = base, float(beta)
        if not 0.0 < self.beta <= 1.0:
            raise LabelStoreError(f"drift beta must be in (0, 1], got {beta}")

    def kind_of(self, epoch, epochs):
        return self.base.kind_of(epoch, epochs)

    def step(self, epoch, batch, epochs):
        p = self.base.step(epoch, batch, epochs)
        return StepPlan(p.kind, p.weight, self.beta if p.uses_labels else None)

    def epoch_uses_labels(self, epoch, epochs):
        return self.base.epoch_uses_labels(epoch, epochs)

    def validate(self, epochs):
        self.base.validate(epochs)

    def for_labels(self, stored_epochs):
        base = self.base.for_labels(stored_epochs)
        return self if base is self.base else DriftGated(base, self.beta)

    def __str__(self) -> str:
        return f"{self.base}|drift" + ("" if self.beta == 1.0 else f":beta={fmt_number(self.beta)}")


class Corrected(Schedule):
    """Any schedule, with the stored labels of drifting crops corrected on its soft steps.

    A record whose stored teacher top-1 is not the image's class keeps the teacher's
    distribution with the class moved to the top (``mode="swap"``: the two logits trade places;
    ``"raise"``: the class lifted just above the top-1, or by ``margin``). Needs class labels.
    """

    def __init__(self, base: Schedule, mode: str = "swap", margin: float = 0.0):
        if isinstance(base, (Corrected, DriftGated)):
            raise LabelStoreError("use one of '|drift' (replace a drifting crop's label by the hard one) and "
                                  "'|correct' (keep it, with the class made top-1), not both")
        if mode not in ("swap", "raise"):
            raise LabelStoreError(f"correct mode must be 'swap' or 'raise', got {mode!r}")
        if float(margin) < 0 or (mode == "swap" and float(margin) != 0):
            raise LabelStoreError(f"correct margin must be >= 0 and is only used by mode=raise, got {margin}")
        self.base, self.mode, self.margin = base, mode, float(margin)

    def kind_of(self, epoch, epochs):
        return self.base.kind_of(epoch, epochs)

    def step(self, epoch, batch, epochs):
        p = self.base.step(epoch, batch, epochs)
        return StepPlan(p.kind, p.weight, None, (self.mode, self.margin) if p.uses_labels else None)

    def epoch_uses_labels(self, epoch, epochs):
        return self.base.epoch_uses_labels(epoch, epochs)

    def validate(self, epochs):
        self.base.validate(epochs)

    def for_labels(self, stored_epochs):
        base = self.base.for_labels(stored_epochs)
        return self if base is self.base else Corrected(base, self.mode, self.margin)

    def __str__(self) -> str:
        opts = [] if self.mode == "swap" else [f"mode={self.mode}"]
        if self.margin:
            opts.append(f"margin={fmt_number(self.margin)}")
        return f"{self.base}|correct" + (":" + ",".join(opts) if opts else "")
