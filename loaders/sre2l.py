"""SRe2L-shaped batches, so an SRe2L-style training script trains from a label file unpatched.

SRe2L's training loop (``reference/prior-art.md``) reads, per step::

    images, target, flip_status, coords_status = batch_data[0]
    mix_index, mix_lam, mix_bbox, soft_label = batch_data[1:]
    images, _, _, _ = mix_aug(images, args, mix_index, mix_lam, mix_bbox)   # CutMix / Mixup itself
    loss = KLDivLoss(log_softmax(model(images) / T), softmax(soft_label / T))

and gets those batches from a patched PyTorch fetcher. :class:`SRe2LBatches` yields exactly
that structure from a :class:`~loaders.replay.ReplayLoader`: the images unmixed and
normalised, the stored batch's partner permutation, lambda and box, and the stored logits;
the script's own CutMix (a box copy) and Mixup (``lam * x + (1 - lam) * x[index]``) then make
bit for bit the pixels the teacher labelled.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch

from labelstore import LabelStoreError
from labelstore.importers import boxes_to_coords

from ._transfer import to_device
from .pairs import LoaderView
from .schedules import SOFT, DriftGated

if TYPE_CHECKING:
    from .replay import ReplayLoader


class SRe2LBatches(LoaderView):
    """``train_loader`` for an SRe2L-style loop: ``[(images, target, flip_status, coords_status),
    mix_index, mix_lam, mix_bbox, soft_label]`` per step, with ``len``, ``set_epoch`` and the
    loader's state dict. ``mix_type`` is the file's ``"cutmix"`` / ``"mixup"`` (``None``: unmixed),
    what the script's ``--mix-type`` must say.

    ``target`` is the images' classes (-1 when unknown); ``coords_status`` is SRe2L's
    ``(i/H, j/W, h/H, w/W)``; a batch the file stores unmixed comes with the identity
    permutation, ``mix_lam = 1.0`` and an empty box, which both mix functions leave unchanged.
    """

    def __init__(self, loader: "ReplayLoader"):
        kinds = set(loader.schedule.kinds(loader.epochs))
        if kinds != {SOFT} or isinstance(loader.schedule, DriftGated):
            raise LabelStoreError(
                f"SRe2L's loop trains every step on stored soft labels, but schedule '{loader.schedule}' has "
                f"{sorted(kinds - {SOFT}) or 'drift-gated'} steps; use schedule 'soft' here, or loader.pairs() with "
                "loaders.StepLoss for HALD-style schedules")
        super().__init__(loader)
        kind = loader.labels.mix_policy.kind
        self.mix_type = None if kind == "none" else kind
        sizes = loader.labels.image_sizes
        self._sizes = np.asarray(loader.backend.image_sizes if sizes is None else sizes)

    def __iter__(self) -> Iterator[list]:
        for step in self.loader.iter_steps(apply_mix=False):
            n, dev = len(step), step.images.device
            target = step.labels if step.labels is not None else torch.full((n,), -1, dtype=torch.long, device=dev)
            if step.mix is not None and len(step.mix.partner) != n:
                raise LabelStoreError(
                    f"epoch {step.epoch} batch {step.batch} is split across {self.loader.world_size} ranks, but SRe2L's "
                    "loop mixes whole batches; use a world size that divides the batches per epoch, or loader.pairs()")
            crops = step.crops
            coords = to_device(boxes_to_coords(crops.boxes, self._sizes[crops.indices]), dev)
            flips = to_device(np.asarray(crops.flips, bool), dev)
            if step.mix is None:
                index, lam, box = to_device(np.arange(n, dtype=np.int64), dev), 1.0, [0, 0, 0, 0]
            else:
                index, lam = to_device(np.asarray(step.mix.partner, np.int64), dev), float(step.mix.lam)
                box = [int(v) for v in step.mix.box]
            yield [(step.images, target, flips, coords), index, lam, box, step.logits]
