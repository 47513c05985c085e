"""Scoped versions of torch's process-wide switches, for benchmarks that run steps in one process.

A benchmark that flips a global (grad mode, thread count, the global RNG) for one step changes
every later step too, and only on the runs that take that code path (e.g. when a cache is
empty). These restore the previous state on exit, so each step sees what it would alone.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: unchanged), then restore the old count."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU RNG seeded to ``seed``; the caller's RNG state is
    restored after, so a seeded step neither depends on nor changes what ran before it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def torch_rng_kept() -> Iterator[None]:
    """Run the block (which may seed torch's global CPU RNG itself) and restore the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        yield
