"""The ``torch.utils.data`` route: a batch sampler of planned batches and a dataset that makes their steps.

``DataLoader(ReplayDataset(loader), batch_sampler=ReplayBatchSampler(loader), num_workers=k)``
— or anything that wraps a DataLoader — yields ``[images, StepTargets]`` per step, the same
images and targets ``ReplayLoader`` yields: the sampler hands out, per step of this rank, the
keys ``(epoch, batch, position)`` of its records; the dataset turns one step's keys into its
crops, pixels, mix and labels through the loader's own code (so the record↔replay pixel
contract holds) and returns them as records, which the default collate stacks back.
Images are made on the host (in the workers); move them with ``x.to(device)``
(``pin_memory=True`` in the DataLoader makes that copy asynchronous).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from labelstore import LabelStoreError

from .pairs import StepTargets
from ._replay_checks import resume_position
from .torch_backend import TorchBackend

if TYPE_CHECKING:
    from .replay import ReplayLoader


class ReplayKey(NamedTuple):
    """One record of a planned step: training epoch, batch of that epoch, position in the batch."""

    epoch: int
    batch: int
    position: int


class ReplayBatchSampler(Sampler):
    """Per step of an epoch on this rank, the list of its records' keys (``batch_sampler=``).

    Epochs advance as ``ReplayLoader``'s do: ``set_epoch(e)`` (Lightning and Accelerate call it)
    or one per full pass. The loader already shards by rank, so under Lightning use
    ``Trainer(use_distributed_sampler=False)`` and do not let Accelerate re-shard it.
    ``state_dict()`` counts steps handed to the DataLoader, which runs ahead of training by its
    prefetch: to resume exactly, load ``{"epoch": e, "step": steps_trained}``.
    """

    def __init__(self, loader: "ReplayLoader"):
        self.loader = loader
        self.batch_size = loader.batch_size  # what DataLoader wrappers read; the last step may be shorter
        self.drop_last = False
        self.epoch = loader.epoch
        self._resume: tuple[int, int] | None = None
        self._done = (self.epoch, 0)

    def __iter__(self) -> Iterator[list[ReplayKey]]:
        if self.epoch >= self.loader.epochs:
            raise LabelStoreError(f"all {self.loader.epochs} epochs have been iterated; call set_epoch(e) to run one again")
        epoch = self.epoch
        start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None
        for i, (item, part) in list(enumerate(self.loader.shard_plan(epoch)))[start:]:
            positions = range(item.size) if part is None else range(part.start, part.stop)
            self._done = (epoch, i + 1)
            yield [ReplayKey(epoch, item.batch, p) for p in positions]
        self.epoch = epoch + 1
        self._done = (self.epoch, 0)

    def __len__(self) -> int:
        return len(self.loader.shard_plan(min(self.epoch, self.loader.epochs - 1)))

    def set_epoch(self, epoch: int) -> None:
        if not 0 <= int(epoch) < self.loader.epochs:
            raise LabelStoreError(f"epoch {epoch} is out of range: training runs epochs 0..{self.loader.epochs - 1}")
        self.epoch = int(epoch)
        if self._resume is not None and self._resume[0] != self.epoch:
            self._resume = None
        self._done = self._resume or (self.epoch, 0)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._done[0], "step": self._done[1], "plan": self.loader.plan_settings()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, step = resume_position(state, self.loader.plan_settings(), self.loader.epochs,
                                           lambda e: len(self.loader.shard_plan(e)))
        self._resume = (self.epoch, step) if step else None
        self._done = (self.epoch, step)


class ReplayDataset(Dataset):
    """Turns one step's keys (from :class:`ReplayBatchSampler`) into its records ``(image, StepTargets row)``.

    ``__getitems__`` makes the whole step at once; ``dataset[key]`` (one record) works too
    and reuses the last step it made. Steps are made on the host, whatever the loader's device.
    """

    def __init__(self, loader: "ReplayLoader"):
        self.loader = loader
        self._plan: tuple[int, list] = (-1, [])
        self._last: tuple[tuple[int, int], list] | None = None
        self._twin: TorchBackend | None = None

    def __len__(self) -> int:
        return self.loader.num_images

    def __getitems__(self, keys: Sequence[ReplayKey]) -> list[tuple[torch.Tensor, StepTargets]]:
        if not len(keys):
            return []
        epoch, batch = int(keys[0][0]), int(keys[0][1])
        if any(int(k[0]) != epoch or int(k[1]) != batch for k in keys):
            raise LabelStoreError("a DataLoader batch over ReplayDataset mixes records of several planned batches; "
                                  "pass batch_sampler=ReplayBatchSampler(loader) (and no batch_size or sampler)")
        records = self._records(epoch, batch)
        try:
            return [records[int(k[2])] for k in keys]
        except IndexError:
            raise LabelStoreError(f"a key names position {max(int(k[2]) for k in keys)} of epoch {epoch} batch {batch}, "
                                  f"which has {len(records)} records; keys come from ReplayBatchSampler") from None

    def __getitem__(self, key: ReplayKey) -> tuple[torch.Tensor, StepTargets]:
        if not (isinstance(key, tuple) and len(key) == 3):
            raise LabelStoreError(f"ReplayDataset is indexed by ReplayKey(epoch, batch, position), got {key!r}; "
                                  "use it with batch_sampler=ReplayBatchSampler(loader)")
        return self.__getitems__([key])[0]

    def _backend(self):
        """The loader's backend; inside a DataLoader worker, a TorchBackend's in-process twin (same
        pixel path): worker processes may not start worker processes of their own."""
        backend = self.loader.backend
        if isinstance(backend, TorchBackend) and backend.num_workers > 0 and get_worker_info() is not None:
            if self._twin is None:
                self._twin = TorchBackend(backend.source)
            return self._twin
        return backend

    def _records(self, epoch: int, batch: int) -> list[tuple[torch.Tensor, StepTargets]]:
        """Every record of one planned batch, made once and kept until another batch is asked for."""
        if self._last is not None and self._last[0] == (epoch, batch):
            return self._last[1]
        ld = self.loader
        if self._plan[0] != epoch:
            self._plan = (epoch, ld.plan(epoch))
        if not 0 <= batch < len(self._plan[1]):
            raise LabelStoreError(f"epoch {epoch} has batches 0..{len(self._plan[1]) - 1}, a key names batch {batch}")
        item = self._plan[1][batch]
        crop, mix = ld.crop_source(epoch, item)
        size = ld.labels.crop_policy.size if item.stored is not None else ld.hard_crop.size
        logits = None if item.stored is None else torch.from_numpy(ld.labels.read_logits(*item.stored))
        pixels = iter(self._backend().iter_batches([crop], size))
        try:  # the step copies the pixels before the backend may reuse their buffer
            step = ld.make_step(epoch, item, None, crop, mix, next(pixels), logits, device=torch.device("cpu"))
        finally:
            getattr(pixels, "close", lambda: None)()
        y = StepTargets.from_step(step)
        rows = [t.unbind(0) if isinstance(t, torch.Tensor) else t for t in y]
        records = [(image, StepTargets(*(field[j] for field in rows))) for j, image in enumerate(step.images.unbind(0))]
        self._last = ((epoch, batch), records)
        return records


def replay_dataloader(loader: "ReplayLoader", **kwargs: Any) -> torch.utils.data.DataLoader:
    """``DataLoader(ReplayDataset(loader), batch_sampler=ReplayBatchSampler(loader), **kwargs)``."""
    if {"batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"} & set(kwargs):
        raise LabelStoreError("the loader plans the batches: pass num_workers, pin_memory, prefetch_factor, ... "
                              "but not batch_size, shuffle, sampler, batch_sampler or drop_last")
    return torch.utils.data.DataLoader(ReplayDataset(loader), batch_sampler=ReplayBatchSampler(loader), **kwargs)
