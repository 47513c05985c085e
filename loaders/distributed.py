"""Sharding an epoch's batches across ``torch.distributed`` ranks.

Rule: every rank plans the same epoch (same seed, same pool draws). Of ``nb`` batches,
the first ``nb - r`` (``r = nb % world_size``) go whole to rank ``b % world_size``, so stored
batches — and their batch-specific labels and CutMix partners — stay intact. Each of the last
``r`` batches is split into ``world_size`` contiguous parts (rank i takes part i; its mix is
applied to the whole batch first). Every rank gets the same number of steps, and the union of
the ranks' records is the epoch, with no duplicates.
"""
from __future__ import annotations

import numpy as np

from labelstore import LabelStoreError


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world_size): as given, else from an initialised process group, else (0, 1)."""
    if rank is None and world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise LabelStoreError("pass both rank and world_size, or neither (then torch.distributed decides)")
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise LabelStoreError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
    return rank, world_size


def shard_batches(sizes: list[int], rank: int, world_size: int) -> list[tuple[int, slice | None]]:
    """This rank's ``(batch, part)`` list for an epoch of batches with ``sizes`` records each.

    ``part`` is None for a whole batch, else the slice of batch positions this rank takes.
    """
    nb = len(sizes)
    r = nb % world_size
    mine: list[tuple[int, slice | None]] = [(b, None) for b in range(rank, nb - r, world_size)]
    for b in range(nb - r, nb):
        bounds = np.linspace(0, sizes[b], world_size + 1).round().astype(int)
        lo, hi = int(bounds[rank]), int(bounds[rank + 1])
        if hi > lo:  # a batch smaller than world_size leaves some ranks without a part
            mine.append((b, slice(lo, hi)))
    return mine
