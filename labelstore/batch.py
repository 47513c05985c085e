"""What the reader returns: one stored batch, one image's records across epochs, and the
temperature softmax applied to their logits."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from .crops import Mix
from .errors import LabelStoreError


@dataclass(repr=False)
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
        if self.logits is None:
            raise LabelStoreError("this Batch was read without its labels (read_crops); use read_batch for logits")
        return softmax(self.logits, T)

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:  # a short summary: printing 1000 logits per record helps nobody
        logits = "not read" if self.logits is None else f"{self.logits.shape[0]}x{self.logits.shape[1]} {self.logits.dtype}"
        return (f"<Batch epoch {self.epoch} batch {self.batch}: {len(self)} records, images "
                f"{_head(self.indices)}, logits {logits}, {_describe_mix(self.mix)}>")


class ImageHistory:
    """One image's stored records across epochs (``LabelFile.image_history``): row k is epoch ``epochs[k]``.

    ``mixes[k]`` is the mix of the image's batch in that epoch (drawn or decoded when first
    asked for); its partner is the record at position ``mixes[k].partner[positions[k]]``.
    """

    def __init__(self, image: int, epochs: np.ndarray, batches: np.ndarray, positions: np.ndarray,
                 logits: np.ndarray, boxes: np.ndarray, flips: np.ndarray, mixes: Callable[[], list]):
        self.image = image
        self.epochs = epochs  # (k,) int64 epochs whose batch holding the image is stored
        self.batches = batches  # (k,) int64 the image's batch in each of those epochs
        self.positions = positions  # (k,) int64 its position inside that batch
        self.logits = logits  # (k, C) float32
        self.boxes = boxes  # (k, 4) int32 (top, left, height, width)
        self.flips = flips  # (k,) bool
        self._mixes = mixes

    @cached_property
    def mixes(self) -> list[Mix | None]:
        return self._mixes()

    def probs(self, T: float = 1.0) -> np.ndarray:
        """Soft labels at temperature ``T``, one row per stored epoch."""
        return softmax(self.logits, T)

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        return (f"<ImageHistory image {self.image}: {len(self)} records, epochs {_head(self.epochs)}, "
                f"logits {self.logits.shape[0]}x{self.logits.shape[1]} {self.logits.dtype}>")


def _head(xs: np.ndarray, k: int = 4) -> str:
    xs = [int(x) for x in np.asarray(xs).reshape(-1)]
    return "[" + ", ".join(map(str, xs[:k])) + (", ...]" if len(xs) > k else "]")


def _describe_mix(mix: Mix | None) -> str:
    if mix is None:
        return "not mixed"
    box = f" box {tuple(int(v) for v in mix.box)}" if mix.kind == "cutmix" else ""
    return f"{mix.kind} lam {mix.lam:.3f}{box}"


def softmax(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    if T <= 0:
        raise LabelStoreError(f"temperature must be positive, got {T}")
    z = logits / np.float32(T)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def logits_from_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Turn probabilities ``softmax(z / T)`` back into logits equal to ``z`` up to a per-row shift.

    ``T * log(p)`` differs from ``z`` only by a constant per record, which no softmax sees, so
    any training temperature can then be applied. Zeros are clamped to the smallest fp32 log;
    each row is shifted so its maximum is 0.
    """
    p = np.asarray(probs, dtype=np.float32)
    if not np.isfinite(p).all() or (p < 0).any():
        raise LabelStoreError("probabilities must be finite and non-negative")
    # shifted so each row's largest logit is 0: the distribution is unchanged, and the values
    # stay small, so a codec's fp16 cast keeps softmax(z / T) on the stored probabilities
    z = temperature * np.log(np.maximum(p.astype(np.float64), np.finfo(np.float32).tiny))
    return (z - z.max(axis=-1, keepdims=True)).astype(np.float32)
