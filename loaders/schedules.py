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

from labelstore import LabelStoreError

from ._modifiers import Corrected, DriftGated
from ._phases import (BLEND, HARD, SOFT, AllHard, AllSoft, Alternate, Blend, HALDSplit, Phases, Ratio, Schedule,
                      StepPlan)

__all__ = ["SOFT", "HARD", "BLEND", "StepPlan", "Schedule", "AllSoft", "AllHard", "Phases", "HALDSplit", "Alternate",
           "Ratio", "Blend", "DriftGated", "Corrected", "parse_schedule"]


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
