"""Host-to-device copies that never make the host wait, and the label prefetch thread.

A copy from pageable host memory to a CUDA device synchronises the stream (the host waits
for every queued kernel, i.e. for the previous training step); from pinned memory with
``non_blocking=True`` it is queued like a kernel. Every per-step copy in the loaders goes
through :func:`to_device`.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import numpy as np
import torch


def pinned(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` in pinned host memory when it is bound for a CUDA device (a copy unless already pinned)."""
    if device.type == "cuda" and t.device.type == "cpu" and not t.is_pinned():
        return t.pin_memory()
    return t


def to_device(a: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array or tensor on ``device``, with no host synchronisation (pinned, non_blocking)."""
    t = torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a
    if t.device == device or device.type == "cpu" and t.device.type == "cpu":
        return t
    return pinned(t, device).to(device, non_blocking=True)


class Prefetch:
    """Runs ``load(key)`` for the next ``depth`` keys in a background thread, in order.

    Reading and decoding labels is pread + crc32 + zstd + numpy, which release the GIL, so
    step t+1's labels are ready when step t is done training. ``depth=0`` loads in the
    caller's thread (the same values, only later). Errors surface at the step they belong to.
    """

    def __init__(self, load: Callable, keys: Iterable, depth: int):
        self._load, self._keys, self._depth = load, iter(keys), max(0, int(depth))
        self._pending: deque[Future] = deque()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="loaders-labels") if self._depth else None
        for _ in range(self._depth):
            self._submit()

    def _submit(self) -> None:
        key = next(self._keys, _END)
        if key is not _END:
            self._pending.append(self._pool.submit(self._load, key))

    def next(self):
        if self._pool is None:
            return self._load(next(self._keys))
        future = self._pending.popleft()
        self._submit()
        return future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # waits for at most the one read running
            self._pool = None


_END = object()
