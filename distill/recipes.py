"""Student training recipes: the settings a paper's own training script uses, by name.

A recipe fixes what `distill train` does around the schedule: the KD temperature and loss
scale, the optimiser's learning rate, weight decay and which parameters it decays, the
learning-rate curve, the hard steps' label smoothing, mixing and batch size, and how stored
batches are reused. The schedule (all-soft, HALD's split, ...) stays a separate choice, so
"all-soft under HALD's recipe" is a meaningful run. Explicit settings override a recipe's;
the resolved recipe is recorded beside the student.

Read from the public training scripts (commits in docs/distill.md):

- ``labelstore``: this project's defaults (KL at T=4 with Hinton's T^2, a per-step cosine to 0,
  label smoothing 0.1, the soft batch size in hard steps).
- ``hald``: HALD's ``validate/train_fkd.py`` + ``hyper.yaml`` (IPC <= 40): KL at T=20 without
  T^2, AdamW 1e-3, wd 0.01 on weights only, one cosine over ``epochs x eta`` (eta 2) stepped per
  epoch, hard steps with timm's CutMix at label smoothing 0.8 in batches of 16, a shuffled pool
  of stored batches emptied at each soft phase.
- ``sre2l``: SRe2L's ``validate/train_FKD.py``: KL at T=20 without T^2, a cosine over the epochs
  stepped per epoch, wd on weights only; all soft.
A spec changes settings of a named recipe for ablations: ``hald:kd_t_squared=true`` is HALD's
recipe with Hinton's T^2 put back.

- ``cvdd``: CV-DD's ``validate/train_fkd.py``: SRe2L's, with eta 2 (ImageNet-1K ResNet-18 at IPC
  1 and 10). Its 16-image batches split into two forward passes of 8 are not reproduced: the
  batch is the label file's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from distill.optim import cosine_lr
from labelstore.errors import LabelStoreError

__all__ = ["Recipe", "RECIPES", "RECIPE_FIELDS", "get_recipe", "lr_at"]


@dataclass(frozen=True)
class Recipe:
    """One student recipe; see the module docstring for where each comes from."""

    name: str
    temperature: float  # KD temperature of soft steps
    kd_t_squared: bool  # Hinton's T^2 on the KL (HALD, SRe2L and CV-DD leave it out)
    lr: float
    weight_decay: float
    decay_1d: bool  # decay biases and norm parameters too (the papers' get_parameters exempts them)
    lr_per: str  # "step": cosine over optimiser steps; "epoch": constant within an epoch (LambdaLR per epoch)
    lr_eta: float  # the cosine spans epochs x eta (eta 2 ends at half the learning rate)
    label_smoothing: float  # hard steps' one-hot smoothing (timm's Mixup label_smoothing)
    hard_mix: str  # mixing of hard steps: cutmix | mixup | none
    hard_batch_size: int | None  # batch size of all-hard epochs (None: the stored batch size)
    pool: str  # loaders.pools policy

    def __post_init__(self):
        if self.lr_per not in ("step", "epoch") or self.hard_mix not in ("cutmix", "mixup", "none"):
            raise LabelStoreError(f"recipe {self.name!r}: lr_per is 'step' or 'epoch' and hard_mix 'cutmix', 'mixup' "
                                  f"or 'none', got {self.lr_per!r} and {self.hard_mix!r}")
        if self.temperature <= 0 or self.lr <= 0 or self.lr_eta <= 0 or not 0 <= self.label_smoothing < 1:
            raise LabelStoreError(f"recipe {self.name!r}: temperature, lr and lr_eta must be positive and "
                                  "label_smoothing in [0, 1)")

    def as_dict(self) -> dict:
        return asdict(self)


# the recipe's settings that `distill train` also takes one by one (an explicit one overrides the recipe's)
RECIPE_FIELDS = ("temperature", "lr", "weight_decay", "label_smoothing", "hard_mix", "hard_batch_size", "pool")

RECIPES: dict[str, Recipe] = {
    "labelstore": Recipe("labelstore", temperature=4.0, kd_t_squared=True, lr=1e-3, weight_decay=0.01, decay_1d=True,
                         lr_per="step", lr_eta=1.0, label_smoothing=0.1, hard_mix="cutmix", hard_batch_size=None,
                         pool="without_replacement"),
    "hald": Recipe("hald", temperature=20.0, kd_t_squared=False, lr=1e-3, weight_decay=0.01, decay_1d=False,
                   lr_per="epoch", lr_eta=2.0, label_smoothing=0.8, hard_mix="cutmix", hard_batch_size=16,
                   pool="without_replacement_per_phase"),
    "sre2l": Recipe("sre2l", temperature=20.0, kd_t_squared=False, lr=1e-3, weight_decay=0.01, decay_1d=False,
                    lr_per="epoch", lr_eta=1.0, label_smoothing=0.1, hard_mix="cutmix", hard_batch_size=None,
                    pool="without_replacement"),
    "cvdd": Recipe("cvdd", temperature=20.0, kd_t_squared=False, lr=1e-3, weight_decay=0.01, decay_1d=False,
                   lr_per="epoch", lr_eta=2.0, label_smoothing=0.1, hard_mix="cutmix", hard_batch_size=None,
                   pool="without_replacement"),
}


def get_recipe(spec: str) -> Recipe:
    """The recipe `spec` names: `hald`, or a recipe with some settings changed, `hald:kd_t_squared=true,
    label_smoothing=0.1` (for ablations); a LabelStoreError naming the recipes and settings otherwise."""
    name, _, body = str(spec).partition(":")
    try:
        recipe = RECIPES[name.strip()]
    except KeyError:
        raise LabelStoreError(f"unknown recipe {name!r}; use one of {', '.join(RECIPES)}") from None
    if not body.strip():
        return recipe
    changes = {}
    types = {f.name: f.type for f in fields(Recipe)}
    for part in body.split(","):
        key, eq, value = (x.strip() for x in part.partition("="))
        if not eq or key not in types or key == "name":
            raise LabelStoreError(f"cannot read {part!r} in recipe {spec!r}: write key=value with a key of "
                                  f"{', '.join(k for k in types if k != 'name')}")
        changes[key] = _value(value, types[key], spec)
    return replace(recipe, name=str(spec), **changes)


def _value(text: str, kind: str, spec: str):
    """`text` as the recipe field type `kind` (the dataclass's annotation string)."""
    try:
        if kind == "bool":
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if kind == "float":
            return float(text)
        if kind.startswith("int"):
            return None if text.lower() == "none" else int(text)
        return text
    except ValueError:
        raise LabelStoreError(f"{text!r} in recipe {spec!r} is not a {kind.split(' ')[0]}") from None


def lr_at(recipe: Recipe, base: float, epoch: int, epochs: int, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step `step` (of `total_steps`) in `epoch` (of `epochs`):
    the cosine over steps, or (`lr_per="epoch"`) over epochs as `LambdaLR` stepped once an epoch,
    both stretched by `eta`."""
    if recipe.lr_per == "epoch":
        return cosine_lr(epoch, epochs, base, eta=recipe.lr_eta)
    return cosine_lr(step, total_steps, base, eta=recipe.lr_eta)
