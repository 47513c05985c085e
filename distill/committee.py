"""Teachers together: loaded and frozen with their prior accuracy, checked against each other,
weighted as CV-DD weights them, and run as one committee.

- `load_teachers`: every spec (a checkpoint or efficientnet-lite0/1/2, `distill.teachers`)
  loaded in eval mode with frozen weights, each with its prior accuracy in % (given, else the
  checkpoint's test or validation accuracy).
- `committee_weights`: CV-DD's weights softmax(prior / T). T is the *committee temperature*
  (`--committee-temperature` of recover and relabel), not the KD temperature of train.
- `Committee`: the weighted sum of the teachers' logits, each teacher seeing the pixels in its
  own normalisation and resolution; `load_committee` builds the one relabel labels with.
- `batch_specific_bn`: a teacher whose BatchNorm uses each batch's own statistics (CV-DD and
  HALD relabel so), never touching its running statistics.

recover optimises images against the teachers (`load_teachers`); relabel labels crops with a
`Committee`. One teacher is a committee of one (weight 1).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.data import ImageDataset
from distill.inputs import prior_of
from distill.models import check_class_count
from distill.teachers import load_teacher
from labelstore.errors import LabelStoreError

__all__ = ["Teacher", "load_teachers", "check_one_label_space", "check_priors", "committee_weights", "Committee",
           "load_committee", "batch_specific_bn"]


@dataclass
class Teacher:
    """A loaded teacher: its spec, the model (eval mode, frozen), its checkpoint meta and its
    prior accuracy in % (None: unknown)."""

    name: str
    model: nn.Module
    meta: dict[str, Any]
    prior: float | None


def load_teachers(specs: list[str], device: str = "cpu", priors: list[float] | None = None,
                  check: Callable[[str, nn.Module, dict[str, Any]], None] | None = None) -> list[Teacher]:
    """Load every teacher of `specs`, freeze it, and call `check(spec, model, meta)` on each as it
    loads (a stage's own refusals); `priors` (in %, one per teacher) replace the checkpoints'."""
    if priors is not None and len(priors) != len(specs):
        raise LabelStoreError(f"{len(priors)} priors for {len(specs)} teachers; give one prior per teacher")
    teachers = []
    for i, spec in enumerate(specs):
        model, meta = load_teacher(spec, device)
        for p in model.parameters():
            p.requires_grad_(False)
        if check is not None:
            check(spec, model, meta)
        teachers.append(Teacher(spec, model, meta, priors[i] if priors is not None else prior_of(meta)))
    return teachers


def check_one_label_space(teachers: list[Teacher]) -> None:
    """LabelStoreError unless every teacher has the first one's classes and input channels."""
    first = teachers[0]
    for t in teachers[1:]:
        if int(t.meta["num_classes"]) != int(first.meta["num_classes"]):
            raise LabelStoreError(f"teacher {t.name} has {t.meta['num_classes']} classes, teacher "
                                  f"{first.name} has {first.meta['num_classes']}; a committee shares one label space")
        if int(t.meta["in_channels"]) != int(first.meta["in_channels"]):
            raise LabelStoreError(f"teachers {first.name} and {t.name} take different channel counts")


def check_priors(teachers: list[Teacher], who: str = "a committee") -> None:
    """LabelStoreError unless every teacher has a prior accuracy (weights need one each)."""
    if any(t.prior is None for t in teachers):
        raise LabelStoreError(f"{who} needs a prior accuracy per teacher: give --priors (in %) for "
                              "teachers whose checkpoint has no test or validation accuracy")


def committee_weights(priors: list[float], temperature: float) -> torch.Tensor:
    """CV-DD weights softmax(prior / T) (priors in percent; T the committee temperature)."""
    return torch.softmax(torch.tensor(priors, dtype=torch.float64) / temperature, 0).float()


class Committee(nn.Module):
    """Weighted sum of several teachers' logits; each teacher sees the pixels in its own
    normalisation and resolution. One teacher is a committee of one (weight 1)."""

    def __init__(self, models: list[nn.Module], metas: list[dict[str, Any]], weights: list[float],
                 mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.metas, self.weights = metas, [float(w) for w in weights]
        self.mean, self.std = list(mean), list(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        c = x.shape[1]
        m0 = torch.tensor(self.mean[:c], device=x.device).view(1, -1, 1, 1)
        s0 = torch.tensor(self.std[:c], device=x.device).view(1, -1, 1, 1)
        pixels = x * s0 + m0  # back to 0..1, then each teacher's own normalisation
        for model, meta, w in zip(self.models, self.metas, self.weights):
            px = pixels
            if int(meta["in_channels"]) == 3 and c == 1:
                px = px.expand(-1, 3, -1, -1)
            m = torch.tensor(meta["mean"], device=x.device).view(1, -1, 1, 1)
            s = torch.tensor(meta["std"], device=x.device).view(1, -1, 1, 1)
            xi = (px - m) / s
            size = int(meta["image_size"])
            if xi.shape[-1] != size or xi.shape[-2] != size:
                xi = F.interpolate(xi, size=(size, size), mode="bilinear", align_corners=False)
            z = model(xi).float() * w
            out = z if out is None else out + z
        return out


def batch_specific_bn(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers normalise with each batch's own statistics and never
    update their running statistics (train-mode BN without side effects); all else in eval."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False  # train mode + no tracking: batch stats, buffers untouched
    return model


def load_committee(specs: list[str], ds: ImageDataset, bn: str = "eval", priors: list[float] | None = None,
                   temperature: float = 10.0, device: str = "cpu") -> tuple[Committee, dict[str, Any]]:
    """Load the teachers, check they fit the images, and wrap them as a weighted committee
    (`temperature`: the committee temperature T of softmax(prior / T)).

    Returns the committee and a JSON-ready description (names, weights, BN mode).
    """
    if not specs:
        raise LabelStoreError("relabel needs at least one teacher (--teachers ckpt.pt [more.pt ...])")
    if bn not in ("eval", "batch"):
        raise LabelStoreError(f"--bn must be 'eval' or 'batch' (batch-specific BN statistics), got {bn!r}")

    def fits_the_images(spec: str, model: nn.Module, meta: dict[str, Any]) -> None:
        check_class_count(meta, ds.num_classes, f"{ds.name} ({len(ds)} images)")
        if int(meta["in_channels"]) == 1 and ds.in_channels != 1:
            raise LabelStoreError(f"teacher {spec} takes 1-channel images but the images have {ds.in_channels}")

    # one teacher needs no prior: its weight is 1 whatever --priors says
    teachers = load_teachers(specs, device, priors if len(specs) > 1 else None, check=fits_the_images)
    models = [batch_specific_bn(t.model) if bn == "batch" else t.model.eval() for t in teachers]
    metas = [t.meta for t in teachers]
    if len(teachers) == 1:
        weights = [1.0]
    else:
        check_priors(teachers)
        weights = committee_weights([t.prior for t in teachers], temperature).tolist()
    first = metas[0]
    mean = first.get("mean") or [0.5] * ds.in_channels
    std = first.get("std") or [0.5] * ds.in_channels
    desc = {"teachers": [str(s) for s in specs], "models": [m["model"] for m in metas],
            "weights": [round(w, 6) for w in weights], "bn": bn,
            "test_acc": [m.get("test_acc") for m in metas]}
    return Committee(models, metas, weights, mean, std), desc
