"""One stored batch as the reader returns it, and the temperature softmax applied to its logits."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crops import Mix
from .errors import LabelStoreError


@dataclass
class Batch:
    """One stored batch: who was in it, how each was cropped and mixed, what the teacher said."""

    epoch: int
    batch: int
    indices: np.ndarray  # (n,) image ids, in batch positions
    logits: np.ndarray | None  # (n, C) float32, shift-invariant (docs/format.md); None from read_crops
    boxes: np.ndarray  # (n, 4) int32 (top, left, height, width) in source pixels
    flips: np.ndarray  # (n,) bool
    mix: Mix | None

    def probs(self, T: float = 1.0) -> np.ndarray:
        """Soft labels at temperature ``T``: ``softmax(logits / T)`` in float32."""
        return softmax(self.logits, T)

    def __len__(self) -> int:
        return len(self.indices)


def softmax(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    if T <= 0:
        raise LabelStoreError(f"temperature must be positive, got {T}")
    z = logits / np.float32(T)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z
