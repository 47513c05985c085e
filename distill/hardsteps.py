"""Hard-label training steps without a label file, for all-hard schedules (`distill train --schedule hard`).

An all-hard student reads no stored label, so it needs no label file: every epoch draws a
fresh RandomResizedCrop of every image (a counter-based draw keyed by seed, epoch and index),
mixes the batch as `hard_mix` says and trains on smoothed one-hot targets. The draws are the
ones `loaders.ReplayLoader` makes for its hard steps with the same crop policy, batch size
and seed, so a student trained here equals one trained through a label file it never reads.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from labelstore import CropPolicy, LabelStoreError, MixPolicy, draw_crops, draw_mix, draw_order
from loaders.replay import hard_step_seed
from loaders import Step
from loaders.backend import CropBatch
from loaders.mixing import mix_targets, to_model_input
from loaders.distributed import resolve_rank, shard_batches
from loaders.losses import smooth_one_hot

__all__ = ["HardSteps", "hard_seed"]

def hard_seed(seed: int) -> int:
    """The seed of the hard-step draws, derived from the loader seed as ReplayLoader derives it."""
    return hard_step_seed(seed)


class HardSteps:
    """Iterate hard steps: `steps.set_epoch(e)`, then `for step in steps` (the ReplayLoader interface
    `distill train` uses). Under torch.distributed each rank takes its share of every epoch."""

    def __init__(self, backend, labels_of_images: np.ndarray, num_classes: int, schedule, *, epochs: int,
                 batch_size: int, crop: CropPolicy, hard_mix: MixPolicy, label_smoothing: float, seed: int,
                 mean, std, gray: bool, device: str = "cpu") -> None:
        if batch_size < 1:
            raise LabelStoreError(f"--batch-size must be positive, got {batch_size}")
        self.backend, self.schedule, self.epochs = backend, schedule, int(epochs)
        self.labels = np.asarray(labels_of_images, np.int64)
        self.num_classes, self.batch_size = int(num_classes), int(batch_size)
        self.crop, self.hard_mix, self.label_smoothing = crop, hard_mix, float(label_smoothing)
        self.seed = hard_seed(seed)
        self.input_kw = dict(mean=mean, std=std, device=device, gray=gray)
        self.device = torch.device(device)
        self.num_images = len(self.labels)
        self.rank, self.world_size = resolve_rank(None, None)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if not 0 <= int(epoch) < self.epochs:
            raise LabelStoreError(f"epoch {epoch} is out of range: training runs epochs 0..{self.epochs - 1}")
        self.epoch = int(epoch)

    def _mine(self) -> list[tuple[int, slice | None]]:
        sizes = [min(self.batch_size, self.num_images - s) for s in range(0, self.num_images, self.batch_size)]
        return shard_batches(sizes, self.rank, self.world_size)

    def __len__(self) -> int:
        return len(self._mine())

    def total_steps(self) -> int:
        """Steps over all epochs (every epoch has the same batches)."""
        return len(self) * self.epochs

    def __iter__(self) -> Iterator[Step]:
        epoch, bs = self.epoch, self.batch_size
        order = draw_order(self.seed, epoch, self.num_images)
        sizes = np.asarray(self.backend.image_sizes)
        mine = self._mine()
        batches, mixes = [], []
        for b, _ in mine:
            idx = order[b * bs : (b + 1) * bs]
            boxes, flips = draw_crops(self.crop, self.seed, epoch, idx, sizes[idx])
            batches.append(CropBatch(idx, boxes, flips))
            mixes.append(draw_mix(self.hard_mix, self.crop.size, self.seed, epoch, b, len(idx)))
        pixels = self.backend.iter_batches(batches, self.crop.size)
        try:
            for px, (b, part), cb, mix in zip(pixels, mine, batches, mixes):
                images = to_model_input(px, mix, **self.input_kw)
                y = torch.as_tensor(self.labels[cb.indices], device=self.device)
                hard = mix_targets(smooth_one_hot(y, self.num_classes, self.label_smoothing), mix)
                idx = np.asarray(cb.indices)
                if part is not None:  # the split tail batch of a sharded epoch (mixed as a whole)
                    images, hard, y, idx = images[part], hard[part], y[part], idx[part]
                yield Step(images, hard, "hard", epoch, b, 1.0, 1.0, idx, labels=y, hard_targets=hard, mix=mix)
        finally:
            getattr(pixels, "close", lambda: None)()
        self.epoch = epoch + 1
