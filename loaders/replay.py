"""ReplayLoader: stored crops with their soft labels, and hard-label steps, as a schedule says.

Backend-independent: which images form a batch, their crops, the batch's mix and its labels
are decided here; any :class:`~loaders.backend.PixelBackend` (FFCV or the PyTorch twin)
turns the crop records into pixels. In a soft step the student sees exactly the stored crop
of exactly the stored batch, mixed by the stored Mix through the same code record mode used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from labelstore import CropPolicy, LabelFile, LabelStoreError, Mix, MixPolicy, draw_crops, draw_mix, draw_order

from ._replay_checks import check_images, check_pool, resolve_batch_size, resolve_class_labels, resume_position
from ._transfer import Prefetch, pinned, to_device
from .backend import CropBatch, PixelBackend
from .contract import check_replay, dtype_of, pixel_settings
from .correct import correct_logits
from .distributed import resolve_rank, shard_batches
from .losses import smooth_one_hot
from .mixing import mix_targets, to_model_input
from .pools import LabelPool, resolve_pool
from .schedules import HARD, Schedule, parse_schedule
from .step import PlannedBatch, Step

if TYPE_CHECKING:
    from .pairs import StepPairs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HARD_STREAM = 0x48415244  # "HARD": hard-step crops never share draws with the stored ones


def derive_seed(seed: int, stream: int) -> int:
    """A seed for an independent stream of draws (e.g. hard-step crops) from the loader seed."""
    return int(np.random.SeedSequence([int(seed), stream]).generate_state(1, np.uint64)[0] >> np.uint64(2))


def hard_step_seed(seed: int) -> int:
    """The seed of a loader's hard-step crops, orders and mixes (anyone making the same hard steps uses it)."""
    return derive_seed(seed, _HARD_STREAM)


class ReplayLoader:
    """Iterate training steps: ``loader.set_epoch(e)`` (or let it advance), then ``for step in loader``.

    ``schedule``: a Schedule or its string (``loaders.schedules``). ``pool``: how stored batches
    are reused when fewer epochs are stored than replay labels (``cycle``, ``replacement``,
    ``without_replacement``). ``labels_of_images``: class ids for hard steps, blend and drift
    gating (else taken from ``backend.labels`` when the backend has them).

    ``mean``, ``std``, ``gray`` and ``dtype`` default to what the label file recorded (its
    ``pixels``: the record↔replay contract, ``loaders.contract``), else ImageNet's mean/std,
    colour, float32. A replay whose pixels would differ from the recorded ones — other values,
    another backend or interpolation — raises unless ``allow_pixel_mismatch=True``.

    ``label_prefetch``: how many steps ahead a background thread reads and decodes stored
    labels (0: read in the loop's thread; the steps are the same either way); default 2 on
    CUDA, 0 on CPU. On CUDA, labels,
    indices and pixels from CPU backends travel through pinned memory with ``non_blocking``
    copies, so building a step never waits for the step before it to finish training.
    ``state_dict()`` / ``load_state_dict()`` resume mid-epoch with the same steps.

    ``hard_batch_size``: the batch size of epochs without a soft step (HALD's
    ``--hard-batch-size``: a shuffled pass over every image in batches of its own size);
    default the stored batch size. ``kd_t_squared=False`` drops Hinton's ``T**2`` from the soft
    steps' KL (HALD's and SRe2L's ``KLDivLoss(reduction='batchmean')``).
    """

    def __init__(
        self,
        labels: LabelFile | str | Path,
        backend: PixelBackend,
        schedule: Schedule | str = "soft",
        *,
        epochs: int,
        batch_size: int | None = None,
        temperature: float = 4.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        dtype: torch.dtype | None = None,
        gray: bool | None = None,
        allow_pixel_mismatch: bool = False,
        seed: int = 0,
        pool: LabelPool | str | None = None,
        label_smoothing: float = 0.1,
        hard_mix: MixPolicy | None = MixPolicy("cutmix"),
        hard_crop: CropPolicy | None = None,
        labels_of_images: Sequence[int] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        segment: int = 64,
        label_prefetch: int | None = None,
        hard_batch_size: int | None = None,
        kd_t_squared: bool = True,
    ):
        self.labels = labels if isinstance(labels, LabelFile) else LabelFile(labels)
        self.backend = backend
        self.schedule = parse_schedule(schedule).for_labels(self.labels.num_epochs)
        self.epochs = int(epochs)
        self.schedule.validate(self.epochs)
        if temperature <= 0:
            raise LabelStoreError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.kd_t_squared = bool(kd_t_squared)
        rec = self.labels.pixels or {}
        mean = rec.get("mean", IMAGENET_MEAN) if mean is None else mean
        std = rec.get("std", IMAGENET_STD) if std is None else std
        gray = bool(rec.get("gray", False)) if gray is None else bool(gray)
        dtype = dtype_of(rec["dtype"]) if dtype is None and "dtype" in rec else (dtype or torch.float32)
        self.pixels = pixel_settings(backend, crop_size=self.labels.crop_policy.size, mean=mean, std=std, gray=gray,
                                     dtype=dtype)
        if self.schedule.label_epochs(self.epochs) > 0:  # hard steps pair no stored label with pixels
            check_replay(self.labels.pixels, self.pixels, allow_mismatch=allow_pixel_mismatch)
        self.input_kw = dict(mean=mean, std=std, device=device, dtype=dtype, channels_last=channels_last, gray=gray)
        self.device = torch.device(device)
        # on CUDA the host mostly waits for the device, so reading ahead is free; on CPU the training
        # step's own threads want the cores (measured: no gain there, docs/loaders.md)
        auto = 2 if self.device.type == "cuda" else 0
        self.label_prefetch = auto if label_prefetch is None else max(0, int(label_prefetch))
        self.seed = int(seed)
        self.hard_seed = hard_step_seed(self.seed)
        self.pool = resolve_pool(pool)
        self.label_smoothing = float(label_smoothing)
        self.hard_mix = hard_mix or MixPolicy()
        self.hard_crop = hard_crop or self.labels.crop_policy
        self.rank, self.world_size = resolve_rank(rank, world_size)
        self.segment = max(1, int(segment))
        self.num_images = self.labels.num_images
        self.num_classes = self.labels.num_classes
        check_images(self.labels, backend)
        self.batch_size = resolve_batch_size(self.labels, self.schedule, self.epochs, batch_size)
        self.num_batches = -(-self.num_images // self.batch_size)
        if hard_batch_size is not None and int(hard_batch_size) < 1:
            raise LabelStoreError(f"hard_batch_size must be positive, got {hard_batch_size}")
        self.hard_batch_size = int(hard_batch_size or self.batch_size)
        self.class_labels = resolve_class_labels(self.labels, backend, self.schedule, labels_of_images)
        uses = [self.schedule.epoch_uses_labels(e, self.epochs) for e in range(self.epochs)]
        self._label_epoch = np.cumsum(uses) - 1  # k of each label-replaying epoch
        # the soft phase of each epoch (a run of label-replaying epochs) and its k within that phase:
        # the per-phase pool starts a fresh bag at each phase, as HALD's train_fkd.py does
        self._phase_starts = [e for e in range(self.epochs) if uses[e] and (e == 0 or not uses[e - 1])]
        self._phase = np.searchsorted(self._phase_starts, np.arange(self.epochs), side="right") - 1
        self._uses = uses
        check_pool(self.labels, self.pool, self.schedule, self.epochs, sum(uses))
        self._stored = None if self.labels.complete else self.labels.stored_batches()  # what pools draw from
        self._hard_order: tuple[int, np.ndarray | None] = (-1, None)
        self.epoch = 0
        self._done = (0, 0)  # (epoch, steps of it handed out): what state_dict() reports
        self._resume: tuple[int, int] | None = None  # set by load_state_dict: skip that many steps

    # -- planning -----------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Choose the training epoch the next iteration yields (as DistributedSampler.set_epoch).

        A position loaded by ``load_state_dict`` is kept when it is in this epoch."""
        if not 0 <= int(epoch) < self.epochs:
            raise LabelStoreError(f"epoch {epoch} is out of range: training runs epochs 0..{self.epochs - 1}")
        self.epoch = int(epoch)
        if self._resume is not None and self._resume[0] != self.epoch:
            self._resume = None
        self._done = self._resume or (self.epoch, 0)

    # -- resuming -------------------------------------------------------------------------
    def plan_settings(self) -> dict[str, Any]:
        """Everything the steps depend on; a saved position only applies to a loader with the same."""
        return dict(schedule=str(self.schedule), epochs=self.epochs, seed=self.seed, batch_size=self.batch_size,
                    hard_batch_size=self.hard_batch_size, pool=str(self.pool), rank=self.rank, world_size=self.world_size,
                    labels_crc32=int(self.labels.file_crc32), num_images=self.num_images)

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "step", "plan"}``: the epoch and how many of its steps were handed out.

        Save it with the model's checkpoint; ``load_state_dict`` makes the next iteration
        yield the following steps, exactly as an uninterrupted run would.
        """
        epoch, step = self._done
        return {"epoch": epoch, "step": step, "plan": self.plan_settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where ``state`` (from ``state_dict``) left off, mid-epoch included."""
        self.epoch, step = resume_position(state, self.plan_settings(), self.epochs, lambda e: len(self.shard_plan(e)))
        self._resume = (self.epoch, step) if step else None
        self._done = (self.epoch, step)

    def _start(self, epoch: int) -> int:
        """Steps of ``epoch`` to skip: a loaded position's, once."""
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        return start

    def epoch_batch_size(self, epoch: int) -> int:
        """The batch size of ``epoch``: the stored one, or ``hard_batch_size`` in an all-hard epoch."""
        return self.batch_size if self._uses[epoch] else self.hard_batch_size

    def plan(self, epoch: int) -> list[PlannedBatch]:
        """Every batch of ``epoch`` (all ranks): its StepPlan and the stored batch it replays."""
        if not 0 <= int(epoch) < self.epochs:
            raise LabelStoreError(f"epoch {epoch} is out of range: training runs epochs 0..{self.epochs - 1}")
        assign = None
        bs = self.epoch_batch_size(epoch)
        nb = -(-self.num_images // bs)
        if self._uses[epoch]:
            k = int(self._label_epoch[epoch])
            if self.pool is None:
                assign = np.stack([np.full(nb, k), np.arange(nb)], 1)
            elif self.pool.per_phase:
                phase = int(self._phase[epoch])
                first = self._phase_starts[phase]
                assign = self.pool.assign(k - int(self._label_epoch[first]), nb, self.labels.num_epochs, self.seed,
                                          self._stored, phase=phase)
            else:
                assign = self.pool.assign(k, nb, self.labels.num_epochs, self.seed, self._stored)
        out = []
        for b in range(nb):
            sp = self.schedule.step(epoch, b, self.epochs)
            stored = (int(assign[b, 0]), int(assign[b, 1])) if sp.uses_labels else None
            start = (stored[1] if stored else b) * bs
            out.append(PlannedBatch(b, sp, stored, min(bs, self.num_images - start)))
        return out

    def shard_plan(self, epoch: int) -> list[tuple[PlannedBatch, slice | None]]:
        """This rank's batches of ``epoch``: ``(planned batch, rows of it)`` (``None``: all rows)."""
        items = self.plan(epoch)
        return [(items[b], part) for b, part in shard_batches([it.size for it in items], self.rank, self.world_size)]

    def __len__(self) -> int:
        """Steps this rank yields in the current epoch (epochs differ with a ``hard_batch_size``)."""
        return len(self.shard_plan(min(self.epoch, self.epochs - 1)))

    def total_steps(self) -> int:
        """Steps this rank yields over all epochs (what a per-step learning-rate schedule spans)."""
        if self.hard_batch_size == self.batch_size:
            return len(self.shard_plan(0)) * self.epochs
        per = {u: len(self.shard_plan(self._uses.index(u))) for u in set(self._uses)}
        return sum(per[u] for u in self._uses)

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Step]:
        return self.iter_steps()

    def iter_steps(self, apply_mix: bool = True) -> Iterator[Step]:
        """The steps of the current epoch; ``apply_mix=False`` leaves the images unmixed (for loops
        that apply the step's ``mix`` themselves, as SRe2L's scripts do)."""
        if self.epoch >= self.epochs:
            raise LabelStoreError(f"all {self.epochs} epochs have been iterated; call set_epoch(e) to run one again")
        epoch = self.epoch
        todo = list(enumerate(self.shard_plan(epoch)))[self._start(epoch):]
        labels = Prefetch(self._host_logits, [item.stored for _, (item, _) in todo], self.label_prefetch)
        try:
            for size, seg in self._segments(todo):
                # crop records for a segment, then its pixels in one backend call (prefetched by the
                # backend); the labels are read and decoded ahead in the label thread
                seg = [(i, item, part, self.crop_source(epoch, item)) for i, (item, part) in seg]
                pixels = self.backend.iter_batches([src[0] for *_, src in seg], size)
                try:  # the generator goes first in zip, so it runs to its end (and a backend releases its pass)
                    for px, (i, item, part, (crop, mix)) in zip(pixels, seg):
                        step = self.make_step(epoch, item, part, crop, mix, px, labels.next(), apply_mix)
                        self._done = (epoch, i + 1)
                        yield step
                finally:  # also when the caller stops early
                    getattr(pixels, "close", lambda: None)()
        finally:
            labels.close()
        self.epoch = epoch + 1
        self._done = (self.epoch, 0)

    def _segments(self, todo):
        """Runs of up to ``segment`` steps with one output size (a backend call yields one size)."""
        seg, size = [], None
        for i, (item, part) in todo:
            s = self.labels.crop_policy.size if item.stored is not None else self.hard_crop.size
            if seg and (s != size or len(seg) == self.segment):
                yield size, seg
                seg = []
            seg.append((i, (item, part)))
            size = s
        if seg:
            yield size, seg

    def _host_logits(self, stored: tuple[int, int] | None) -> torch.Tensor | None:
        """A stored batch's decoded logits on the host, pinned when bound for CUDA (label thread)."""
        if stored is None:
            return None
        return pinned(torch.from_numpy(self.labels.read_logits(*stored)), self.device)

    # -- building blocks of a step (also used by loaders.torch_data's per-record route) ------
    def crop_source(self, epoch: int, item: PlannedBatch) -> tuple[CropBatch, Mix | None]:
        """Crop records and mix of a planned batch (stored ones without decoding their labels)."""
        if item.stored is not None:
            batch = self.labels.read_crops(*item.stored)
            return CropBatch(batch.indices, batch.boxes, batch.flips), batch.mix
        b, bs = item.batch, self.epoch_batch_size(epoch)
        if self._hard_order[0] != epoch:  # one O(N log N) draw per epoch, not per batch
            self._hard_order = (epoch, draw_order(self.hard_seed, epoch, self.num_images))
        idx = self._hard_order[1][b * bs : (b + 1) * bs]
        boxes, flips = draw_crops(self.hard_crop, self.hard_seed, epoch, idx, np.asarray(self.backend.image_sizes)[idx])
        mix = draw_mix(self.hard_mix, self.hard_crop.size, self.hard_seed, epoch, b, len(idx))
        return CropBatch(idx, boxes, flips), mix

    def make_step(self, epoch, item: PlannedBatch, part, crop: CropBatch, mix, pixels, logits, apply_mix=True,
                  device: torch.device | None = None) -> Step:
        """One step from its crop records' pixels and its stored logits: device work only, no host waits."""
        dev = self.device if device is None else device
        images = to_model_input(pixels, mix if apply_mix else None, **{**self.input_kw, "device": dev})
        labels = hard = None
        if self.class_labels is not None:
            labels = to_device(self.class_labels[crop.indices], dev)
            hard = mix_targets(smooth_one_hot(labels, self.num_classes, self.label_smoothing), mix)
        kind, sp = item.plan.kind, item.plan
        step = Step(images, hard if kind == HARD else None, kind, epoch, item.batch, sp.weight, self.temperature,
                    np.asarray(crop.indices), labels=labels, hard_targets=hard, stored=item.stored, mix=mix,
                    crops=crop, kd_t_squared=self.kd_t_squared)
        if kind != HARD:  # targets = softmax(logits / T) is computed only if read (Step.targets)
            step.logits = to_device(logits, dev)
            if sp.correct is not None:
                mode, margin = sp.correct
                partner = None if mix is None else labels[to_device(np.asarray(mix.partner, np.int64), dev)]
                step.logits, step.corrected = correct_logits(step.logits, labels, mode=mode, margin=margin,
                                                             partner_labels=partner, lam=1.0 if mix is None else mix.lam)
            if sp.drift_beta is not None:
                step.drift_beta = sp.drift_beta
                step.gated = step.logits.argmax(-1) != labels
        # the split tail batch of a sharded epoch: the mix was applied to the whole batch
        return step if part is None else step.select(part)

    # -- other shapes of the same steps ---------------------------------------------------
    def pairs(self) -> "StepPairs":
        """The steps as ``(images, StepTargets)`` for ``for x, y in ...: loss = StepLoss()(model(x), y)``."""
        from .pairs import StepPairs

        return StepPairs(self)

    def dataloader(self, **kwargs) -> "torch.utils.data.DataLoader":
        """The steps through a ``torch.utils.data.DataLoader`` (``loaders.torch_data``): ``num_workers=``, ..."""
        from .torch_data import replay_dataloader

        return replay_dataloader(self, **kwargs)

    def __repr__(self) -> str:
        return (f"<ReplayLoader {self.epochs} epochs, schedule '{self.schedule}', pool {self.pool}, "
                f"batch {self.batch_size}, rank {self.rank}/{self.world_size}>")
