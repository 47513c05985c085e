"""Schedule modifiers: any schedule plus drift gating (``|drift``) or label correction
(``|correct``) on its soft steps; parsed by :mod:`loaders.schedules`."""
from __future__ import annotations

from labelstore import LabelStoreError

from ._phases import Schedule, StepPlan, fmt_number


class Modifier(Schedule):
    """A schedule that changes only what the soft steps of ``base`` do: kinds, label epochs and
    validation are the base's. Subclasses give :meth:`_plan` (a soft step's plan) and :meth:`_on`
    (the same modifier on another base)."""

    def __init__(self, base: Schedule):
        if isinstance(base, DriftGated) and isinstance(self, DriftGated):
            raise LabelStoreError("drift gating is already on")
        if isinstance(base, Modifier):
            raise LabelStoreError("use one of '|drift' (replace a drifting crop's label by the hard one) and "
                                  "'|correct' (keep it, with the class made top-1), not both")
        self.base = base

    def _plan(self, p: StepPlan) -> StepPlan:
        raise NotImplementedError

    def _on(self, base: Schedule) -> "Modifier":
        raise NotImplementedError

    def kind_of(self, epoch, epochs):
        return self.base.kind_of(epoch, epochs)

    def step(self, epoch, batch, epochs):
        p = self.base.step(epoch, batch, epochs)
        return self._plan(p) if p.uses_labels else StepPlan(p.kind, p.weight)

    def epoch_uses_labels(self, epoch, epochs):
        return self.base.epoch_uses_labels(epoch, epochs)

    def validate(self, epochs):
        self.base.validate(epochs)

    def for_labels(self, stored_epochs):
        base = self.base.for_labels(stored_epochs)
        return self if base is self.base else self._on(base)


class DriftGated(Modifier):
    """Any schedule, plus drift gating on its soft steps.

    A record whose stored teacher top-1 differs from the image's true class gets its hard
    label instead (``beta=1``) or ``(1 - beta) * soft + beta * hard`` loss. Needs class labels.
    """

    def __init__(self, base: Schedule, beta: float = 1.0):
        super().__init__(base)
        self.beta = float(beta)
        if not 0.0 < self.beta <= 1.0:
            raise LabelStoreError(f"drift beta must be in (0, 1], got {beta}")

    def _plan(self, p):
        return StepPlan(p.kind, p.weight, drift_beta=self.beta)

    def _on(self, base):
        return DriftGated(base, self.beta)

    def __str__(self) -> str:
        return f"{self.base}|drift" + ("" if self.beta == 1.0 else f":beta={fmt_number(self.beta)}")


class Corrected(Modifier):
    """Any schedule, with the stored labels of drifting crops corrected on its soft steps.

    A record whose stored teacher top-1 is not the image's class keeps the teacher's
    distribution with the class moved to the top (``mode="swap"``: the two logits trade places;
    ``"raise"``: the class lifted just above the top-1, or by ``margin``). Needs class labels.
    """

    def __init__(self, base: Schedule, mode: str = "swap", margin: float = 0.0):
        super().__init__(base)
        if mode not in ("swap", "raise"):
            raise LabelStoreError(f"correct mode must be 'swap' or 'raise', got {mode!r}")
        if float(margin) < 0 or (mode == "swap" and float(margin) != 0):
            raise LabelStoreError(f"correct margin must be >= 0 and is only used by mode=raise, got {margin}")
        self.mode, self.margin = mode, float(margin)

    def _plan(self, p):
        return StepPlan(p.kind, p.weight, correct=(self.mode, self.margin))

    def _on(self, base):
        return Corrected(base, self.mode, self.margin)

    def __str__(self) -> str:
        opts = [] if self.mode == "swap" else [f"mode={self.mode}"]
        if self.margin:
            opts.append(f"margin={fmt_number(self.margin)}")
        return f"{self.base}|correct" + (":" + ",".join(opts) if opts else "")
