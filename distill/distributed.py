"""Running `distill relabel` / `distill train` under `torchrun`: the process group from the
environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

Without WORLD_SIZE (or with WORLD_SIZE=1) everything here is a no-op, so the stages run as one
process exactly as before. The backend is NCCL for CUDA devices, gloo on CPU.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from labelstore.errors import LabelStoreError

__all__ = ["DistContext", "distributed", "env_world_size", "is_main_process", "barrier", "broadcast_object",
           "run_collectively", "all_reduce_sum", "sync_buffers", "wrap_ddp"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, local rank and the device it should use."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """WORLD_SIZE from the environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise LabelStoreError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; "
                              "start distributed runs with torchrun --nproc_per_node=N") from None


def is_main_process() -> bool:
    """True on rank 0 (or when not distributed): the process that prints and writes shared files."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@contextmanager
def distributed(device: str = "cpu") -> Iterator[DistContext]:
    """Join the process group torchrun describes for the duration of a stage.

    A no-op context (rank 0 of 1) without WORLD_SIZE. An already initialised group is used
    as it is and left alone; a group created here is destroyed on exit. On CUDA each process
    takes the GPU of its LOCAL_RANK.
    """
    import torch.distributed as dist

    world = env_world_size()
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        yield DistContext(device=device)
        return
    if not dist.is_available():
        raise LabelStoreError("WORLD_SIZE is set but this torch build has no torch.distributed; run one process")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise LabelStoreError(f"--device {device} but CUDA is not available; use --device cpu (gloo)")
        if str(device) == "cuda":  # one GPU per process, as torchrun intends
            device = f"cuda:{local}"
        torch.cuda.set_device(torch.device(device))
    created = False
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise LabelStoreError(f"WORLD_SIZE={world} but {', '.join(missing)} unset; start with "
                                  "torchrun --nproc_per_node=N (it sets them)")
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
        created = True
    try:
        yield DistContext(dist.get_rank(), dist.get_world_size(), local, str(device))
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (pickled)."""
    if not ctx.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_collectively(ctx: DistContext, fn: Callable[[], Any], *, only_main: bool = False) -> list[Any]:
    """Run `fn` (on every rank, or only on rank 0) and gather the results; if any rank failed,
    every rank raises, so no rank is left waiting at the next collective for one that died.

    The failing rank re-raises its own exception; the others raise a LabelStoreError naming it.
    """
    result, error, exc_obj = None, None, None
    if ctx.is_main or not only_main:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to every rank, then re-raised here
            error, exc_obj = f"{type(exc).__name__}: {exc}", exc
    if not ctx.active:
        if exc_obj is not None:
            raise exc_obj
        return [result]
    import torch.distributed as dist

    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, (error, result))
    if exc_obj is not None:
        raise exc_obj
    failed = [(r, e) for r, (e, _) in enumerate(gathered) if e is not None]
    if failed:
        r, e = failed[0]
        raise LabelStoreError(f"rank {r} failed ({e}); see its output, fix that, and run again")
    return [res for _, res in gathered]


def all_reduce_sum(values: list[float], device: str) -> list[float]:
    """Sums of per-rank numbers over all ranks (float64)."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: DDP broadcasts them before
    each forward, so the last step leaves each rank with its own; checkpoints and a resumed run
    then start from the same state everywhere."""
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


def wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """What the training steps run: `model` itself in one process, its DistributedDataParallel
    wrapper under torchrun (checkpoints hold the model, never the wrapper)."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = ctx.device
    return DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
