"""Schedules: which steps use stored soft labels, which use hard labels.

A schedule answers, per training epoch and batch, a :class:`StepPlan`: the step kind
(``soft``: a stored batch and its teacher labels; ``hard``: fresh random crops and class
labels; ``blend``: a stored batch trained on ``w * soft + (1 - w) * hard``), its loss weight,
and whether drift gating is on. Each schedule has a string form; ``parse_schedule(str(s)) == s``.

=====================================  =========================================================
``soft`` / ``hard``                    all soft (SRe2L) / all hard baselines
``soft:75,hard:150,soft:75``           phases of n epochs, in order (must sum to the epochs)
``hald`` / ``hald:hard=0.5``           HALD's split of E epochs: soft//2, hard, soft - soft//2
``hald:hard=auto``                     HALD's split with hard share 0.5 / S for S stored epochs
``alt:soft=10,hard=10``                alternating blocks of n epochs, repeated
``ratio:hard=0.25``                    per batch: a fixed share of each epoch's batches is hard
``blend:w=0.7`` / ``blend:start=1,end=0,shape=cosine``   loss mix weight w(epoch) of the soft loss
``<any>|drift`` / ``<any>|drift:beta=0.5``   drift gating on soft steps (see :class:`DriftGated`)
``<any>|correct`` / ``<any>|correct:mode=raise``   drifting crops' labels corrected (:class:`Corrected`)
=====================================  =========================================================

How stored batches are reused when fewer epochs are stored than trained is a label pool's
job (:mod:`loaders.pools`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from labelstore import LabelStoreError

SOFT, HARD, BLEND = "soft", "hard", "blend"


def _fmt(x: float) -> str:
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
        return "hald:hard=auto" if self.auto else f"hald:hard={_fmt(self.hard)}"


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
        return f"ratio:hard={_fmt(self.hard)}"


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
            return f"blend:w={_fmt(self.start)}"
        return f"blend:start={_fmt(self.start)},end={_fmt(self.end)},shape={self.shape}"


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
        return f"{self.base}|drift" + ("" if self.beta == 1.0 else f":beta={_fmt(self.beta)}")


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
        opts = [] if self.mode == "swap" else [f"mode={self.mode}"] + ([f"margin={_fmt(self.margin)}"] if self.margin else [])
        return f"{self.base}|correct" + (":" + ",".join(opts) if opts else "")


def _kv(body: str, text: str) -> list[tuple[str, str]]:
    out = []
    for part in body.split(","):
        k, sep, v = part.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise LabelStoreError(f"cannot parse {part!r} in schedule {text!r}: expected key=value")
        out.append((k.strip(), v.strip()))
    return out


def _num(v: str, text: str, cast=float):
    try:
        return cast(v)
    except ValueError:
        raise LabelStoreError(f"{v!r} in schedule {text!r} is not a number") from None


def parse_schedule(text: str | Schedule) -> Schedule:
    """Parse a schedule's string form (see the module docstring); a Schedule passes through."""
    if isinstance(text, Schedule):
        return text
    if not isinstance(text, str) or not text.strip():
        raise LabelStoreError(f"a schedule is a string like 'soft:75,hard:150,soft:75', got {text!r}")
    base, *mods = [p.strip() for p in text.strip().split("|")]
    head, _, body = base.partition(":")
    head = head.strip().lower()
    if head in (SOFT, HARD) and not body:
        sched: Schedule = AllSoft() if head == SOFT else AllHard()
    elif head == "hald":
        kv = dict(_kv(body, text)) if body else {}
        if set(kv) - {"hard"}:
            raise LabelStoreError(f"'hald' takes only hard=<share> or hard=auto, got {text!r}")
        hard = kv.get("hard", "0.5")
        sched = HALDSplit("auto" if hard == "auto" else _num(hard, text))
    elif head == "alt":
        sched = Alternate([(k, _num(v, text, int)) for k, v in _kv(body, text)])
    elif head == "ratio":
        kv = dict(_kv(body, text))
        if set(kv) != {"hard"}:
            raise LabelStoreError(f"'ratio' takes hard=<share of batches>, e.g. 'ratio:hard=0.25'; got {text!r}")
        sched = Ratio(_num(kv["hard"], text))
    elif head == "blend":
        kv = dict(_kv(body, text))
        if "w" in kv and len(kv) == 1:
            sched = Blend(_num(kv["w"], text))
        elif {"start", "end"} <= set(kv) <= {"start", "end", "shape"}:
            sched = Blend(_num(kv["start"], text), _num(kv["end"], text), kv.get("shape", "linear"))
        else:
            raise LabelStoreError(f"'blend' takes w=<weight> or start=,end=[,shape=linear|cosine]; got {text!r}")
    elif head in (SOFT, HARD):
        phases = []
        for part in base.split(","):
            k, sep, n = part.partition(":")
            if not sep:
                raise LabelStoreError(f"cannot parse phase {part!r} in {text!r}; write e.g. 'soft:75,hard:150,soft:75'")
            phases.append((k.strip().lower(), _num(n.strip(), text, int)))
        sched = Phases(phases)
    else:
        raise LabelStoreError(
            f"unknown schedule {text!r}; use soft, hard, soft:N,hard:N,..., hald, alt:soft=N,hard=N, "
            "ratio:hard=R or blend:w=W, optionally followed by |drift or |correct"
        )
    for mod in mods:
        name, _, body = mod.partition(":")
        name = name.strip()
        kv = dict(_kv(body, text)) if body else {}
        if name == "drift":
            if set(kv) - {"beta"}:
                raise LabelStoreError(f"'drift' takes only beta=<weight>, got {mod!r}")
            sched = DriftGated(sched, _num(kv.get("beta", "1"), text))
        elif name == "correct":
            if set(kv) - {"mode", "margin"}:
                raise LabelStoreError(f"'correct' takes mode=swap|raise and (raise) margin=<logits>, got {mod!r}")
            sched = Corrected(sched, kv.get("mode", "swap"), _num(kv.get("margin", "0"), text))
        else:
            raise LabelStoreError(f"unknown schedule modifier {mod!r}; the modifiers are '|drift[:beta=B]' and "
                                  "'|correct[:mode=swap|raise]'")
    return sched
