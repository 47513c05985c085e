"""The schedules themselves (the step kinds, :class:`StepPlan`, the base class and the
phase / split / alternating / ratio / blend schedules); :mod:`loaders.schedules` is their
public face, with the string forms and the parser."""
from __future__ import annotations

import math
from dataclasses import dataclass

from labelstore import LabelStoreError

SOFT, HARD, BLEND = "soft", "hard", "blend"


def fmt_number(x: float) -> str:
    """Shortest exact text for a float (``repr``), without a trailing ``.0``: 1.0 -> '1'."""
    s = repr(float(x))
    return s[:-2] if s.endswith(".0") else s

@dataclass(frozen=True)
class StepPlan:
    """What one training step is: ``kind``, the soft-loss ``weight`` (blend), drift gating and
    label correction (``(mode, margin)`` of :func:`loaders.correct.correct_logits`)."""

    kind: str
    weight: float = 1.0
    drift_beta: float | None = None
    correct: tuple[str, float] | None = None

    @property
    def uses_labels(self) -> bool:
        return self.kind in (SOFT, BLEND)


class Schedule:
    """Base class. Subclasses implement :meth:`kind_of` (per epoch) or override :meth:`step`."""

    def kind_of(self, epoch: int, epochs: int) -> str:
        raise NotImplementedError

    def step(self, epoch: int, batch: int, epochs: int) -> StepPlan:
        return StepPlan(self.kind_of(epoch, epochs))

    def for_labels(self, stored_epochs: int) -> "Schedule":
        """This schedule for a label file of ``stored_epochs`` epochs (only ``auto`` forms change)."""
        return self

    def epoch_uses_labels(self, epoch: int, epochs: int) -> bool:
        """True when some step of ``epoch`` replays stored soft labels."""
        return self.kind_of(epoch, epochs) in (SOFT, BLEND)

    @property
    def needs_class_labels(self) -> bool:
        """True when some step needs the images' class labels (hard, blend, drift)."""
        return True

    def validate(self, epochs: int) -> None:
        """Raise LabelStoreError when the schedule cannot plan ``epochs`` training epochs."""
        if int(epochs) < 1:
            raise LabelStoreError(f"epochs must be at least 1, got {epochs}")

    def kinds(self, epochs: int) -> list[str]:
        """Per-epoch kind, for a quick look at the plan (``ratio`` epochs show as ``mixed``)."""
        self.validate(epochs)
        return [self.kind_of(e, epochs) for e in range(epochs)]

    def label_epochs(self, epochs: int) -> int:
        """How many training epochs replay stored labels (= stored epochs needed without a pool)."""
        self.validate(epochs)
        return sum(self.epoch_uses_labels(e, epochs) for e in range(epochs))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"parse_schedule({str(self)!r})"


class AllSoft(Schedule):
    """Every step replays stored soft labels (SRe2L)."""

    def kind_of(self, epoch, epochs):
        return SOFT

    @property
    def needs_class_labels(self) -> bool:
        return False

    def __str__(self) -> str:
        return "soft"


class AllHard(Schedule):
    """Every step uses fresh crops and class labels (the hard-label baseline)."""

    def kind_of(self, epoch, epochs):
        return HARD

    def __str__(self) -> str:
        return "hard"


class Phases(Schedule):
    """Consecutive phases of n epochs each, e.g. ``[("soft", 75), ("hard", 150), ("soft", 75)]``."""

    def __init__(self, phases):
        self.phases = tuple((str(k), int(n)) for k, n in phases)
        if not self.phases:
            raise LabelStoreError("a phase schedule needs at least one phase, e.g. 'soft:75,hard:150,soft:75'")
        for k, n in self.phases:
            if k not in (SOFT, HARD) or n < 1:
                raise LabelStoreError(f"bad phase {k}:{n}; phases are soft:N or hard:N with N >= 1")

    @property
    def total(self) -> int:
        return sum(n for _, n in self.phases)

    def validate(self, epochs):
        super().validate(epochs)
        if self.total != epochs:
            raise LabelStoreError(f"schedule '{self}' covers {self.total} epochs but training runs {epochs}; "
                                  "make the phases sum to the epochs, or use 'hald' which splits any count")

    def kind_of(self, epoch, epochs):
        for k, n in self.phases:
            if epoch < n:
                return k
            epoch -= n
        raise LabelStoreError(f"epoch beyond schedule '{self}' ({self.total} epochs)")

    @property
    def needs_class_labels(self) -> bool:
        return any(k == HARD for k, _ in self.phases)

    def __str__(self) -> str:
        return ",".join(f"{k}:{n}" for k, n in self.phases)


class HALDSplit(Schedule):
    """HALD's soft -> hard -> soft split of any epoch count: ``[soft//2, hard, soft - soft//2]``.

    ``hard="auto"`` sizes the hard phase by how often stored labels are reused: share 0.5 / S for
    S stored epochs (HALD's half at S=1). Hard phases help when few crops are stored and cost
    accuracy once several are (docs/benchmarks.md, storage vs accuracy); the file fixes S, so
    :meth:`for_labels` resolves ``auto`` when a loader pairs the schedule with its labels.
    """

    def __init__(self, hard: float | str = 0.5):
        self.auto = hard == "auto"
        self.hard = 0.5 if self.auto else float(hard)
        if not 0.0 <= self.hard <= 1.0:
            raise LabelStoreError(f"hald hard share must be in [0, 1] or 'auto', got {hard}")

    def for_labels(self, stored_epochs: int) -> Schedule:
        return HALDSplit(0.5 / max(1, int(stored_epochs))) if self.auto else self

    def phases(self, epochs: int) -> list[tuple[str, int]]:
        if self.auto:
            raise LabelStoreError("'hald:hard=auto' depends on the label file's stored epochs: resolve it with "
                                  "schedule.for_labels(S) (ReplayLoader does this)")
        hard = int(round(epochs * self.hard))
        soft = epochs - hard
        return [(k, n) for k, n in ((SOFT, soft // 2), (HARD, hard), (SOFT, soft - soft // 2)) if n > 0]

    def kind_of(self, epoch, epochs):
        return Phases(self.phases(epochs)).kind_of(epoch, epochs)

    @property
    def needs_class_labels(self) -> bool:
        return self.hard > 0

    def __str__(self) -> str:
        return "hald:hard=auto" if self.auto else f"hald:hard={fmt_number(self.hard)}"


class Alternate(Schedule):
    """Blocks of n epochs repeated in turn, e.g. ``alt:soft=10,hard=10``."""

    def __init__(self, blocks):
        self.blocks = tuple((str(k), int(n)) for k, n in blocks)
        if not self.blocks or any(k not in (SOFT, HARD) or n < 1 for k, n in self.blocks):
            raise LabelStoreError(f"alternating blocks are soft=N / hard=N with N >= 1, got {self.blocks}")

    def kind_of(self, epoch, epochs):
        epoch %= sum(n for _, n in self.blocks)
        for k, n in self.blocks:
            if epoch < n:
                return k
            epoch -= n

    @property
    def needs_class_labels(self) -> bool:
        return any(k == HARD for k, _ in self.blocks)

    def __str__(self) -> str:
        return "alt:" + ",".join(f"{k}={n}" for k, n in self.blocks)


class Ratio(Schedule):
    """A fixed share ``hard`` of every epoch's batches is hard, spread evenly over the epoch."""

    def __init__(self, hard: float):
        self.hard = float(hard)
        if not 0.0 <= self.hard <= 1.0:
            raise LabelStoreError(f"ratio hard share must be in [0, 1], got {hard}")

    def kind_of(self, epoch, epochs):
        return "mixed"

    def step(self, epoch, batch, epochs):
        # batch b is hard when floor((b+1) r) > floor(b r): exactly round(n r) of n batches, spread out
        hard = math.floor((batch + 1) * self.hard + 1e-9) > math.floor(batch * self.hard + 1e-9)
        return StepPlan(HARD if hard else SOFT)

    def epoch_uses_labels(self, epoch, epochs):
        return self.hard < 1.0

    @property
    def needs_class_labels(self) -> bool:
        return self.hard > 0

    def __str__(self) -> str:
        return f"ratio:hard={fmt_number(self.hard)}"


class Blend(Schedule):
    """Every step replays a stored batch with loss ``w * soft + (1 - w) * hard``; w varies by epoch.

    ``w`` goes from ``start`` (first epoch) to ``end`` (last epoch), linearly or on a cosine.
    """

    def __init__(self, start: float, end: float | None = None, shape: str = "linear"):
        self.start = float(start)
        self.end = self.start if end is None else float(end)
        self.shape = shape
        if shape not in ("linear", "cosine") or not (0 <= self.start <= 1 and 0 <= self.end <= 1):
            raise LabelStoreError(f"blend needs weights in [0, 1] and shape 'linear' or 'cosine', got {self}")

    def weight(self, epoch: int, epochs: int) -> float:
        f = epoch / (epochs - 1) if epochs > 1 else 0.0
        if self.shape == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * f))
        return self.start + (self.end - self.start) * f

    def kind_of(self, epoch, epochs):
        return BLEND

    def step(self, epoch, batch, epochs):
        return StepPlan(BLEND, self.weight(epoch, epochs))

    @property
    def needs_class_labels(self) -> bool:
        return self.start < 1 or self.end < 1

    def __str__(self) -> str:
        if self.start == self.end:
            return f"blend:w={fmt_number(self.start)}"
        return f"blend:start={fmt_number(self.start)},end={fmt_number(self.end)},shape={self.shape}"
