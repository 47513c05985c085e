"""Drawing crop, order and mix parameters: the *make_params* half of augmentation.

Applying them to pixels is the loaders' job; this module only decides *which* crop, flip,
order and CutMix/Mixup partner a record gets. Every draw is keyed by (seed, epoch, index) on
the counter-based RNG in :mod:`labelstore.rng`, so the same parameters can be re-derived by
the reader, the record-mode loader and the replay loader without storing a byte.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import rng
from .errors import LabelStoreError

_ATTEMPTS = 10  # as torchvision's RandomResizedCrop.get_params


@dataclass(frozen=True)
class CropPolicy:
    """How a training crop is drawn: torchvision's RandomResizedCrop + horizontal flip.

    ``size`` is the output (height, width) the crop is resized to; ``kind`` is
    ``"random_resized_crop"`` or ``"full"`` (the whole image, resized, never flipped).
    """

    size: tuple[int, int] = (224, 224)
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    kind: str = "random_resized_crop"

    def __post_init__(self):
        object.__setattr__(self, "size", tuple(int(s) for s in _pair(self.size)))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "ratio", tuple(float(s) for s in self.ratio))
        if self.kind not in ("random_resized_crop", "full"):
            raise LabelStoreError(f"unknown crop kind {self.kind!r}; use 'random_resized_crop' or 'full'")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise LabelStoreError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise LabelStoreError(f"crop ratio must satisfy 0 < min <= max, got {self.ratio}")
        if min(self.size) < 1:
            raise LabelStoreError(f"crop output size must be positive, got {self.size}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "CropPolicy":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class MixPolicy:
    """Batch mixing: ``kind`` is ``"none"``, ``"cutmix"`` or ``"mixup"``; lambda ~ Beta(alpha, alpha).

    ``prob`` is the chance a batch is mixed at all. SRe2L-style relabelling labels the mixed
    image, so stored labels already account for the mix.
    """

    kind: str = "none"
    alpha: float = 1.0
    prob: float = 1.0

    def __post_init__(self):
        if self.kind not in ("none", "cutmix", "mixup"):
            raise LabelStoreError(f"unknown mix kind {self.kind!r}; use 'none', 'cutmix' or 'mixup'")
        if self.kind != "none" and self.alpha <= 0:
            raise LabelStoreError(f"mix alpha must be positive, got {self.alpha}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MixPolicy":
        return cls(**d)


@dataclass
class Mix:
    """One batch's mixing: record ``i`` is mixed with record ``partner[i]`` of the same batch.

    ``lam`` is the weight of the record's own image (after CutMix's box adjustment); ``box``
    is the pasted CutMix region ``(y0, x0, y1, x1)`` in output pixels, all zeros for Mixup.
    """

    kind: str
    partner: np.ndarray
    lam: float
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int32))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, Mix)
            and self.kind == other.kind
            and np.array_equal(self.partner, other.partner)
            and np.float32(self.lam) == np.float32(other.lam)
            and np.array_equal(self.box, other.box)
        )


def _pair(x) -> tuple[int, int]:
    if isinstance(x, (int, np.integer)):
        return int(x), int(x)
    x = tuple(x)
    if len(x) != 2:
        raise LabelStoreError(f"expected a size (height, width), got {x}")
    return int(x[0]), int(x[1])


def draw_order(seed: int, epoch: int, num_images: int) -> np.ndarray:
    """The epoch's sample order: a permutation of ``range(num_images)``."""
    return rng.permutation(seed, epoch, num_images)


def draw_crops(
    policy: CropPolicy, seed: int, epoch: int, indices: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Crop boxes and flips for images ``indices`` in ``epoch``.

    ``sizes`` are the images' ``(height, width)``, shape ``(n, 2)``. Returns ``boxes`` int32
    ``(n, 4)`` as ``(top, left, height, width)`` in source pixels and ``flips`` bool ``(n,)``.
    Same algorithm as torchvision's RandomResizedCrop: up to 10 tries of (area, log-ratio),
    else a centre crop clamped to the ratio range.
    """
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    H, W = sizes[:, 0], sizes[:, 1]
    n = idx.shape[0]
    if policy.kind == "full":
        boxes = np.stack([np.zeros(n, np.int64), np.zeros(n, np.int64), H, W], axis=1)
        return boxes.astype(np.int32), np.zeros(n, bool)

    u = rng.uniform(seed, epoch, rng.STREAM_CROP, idx[:, None], np.arange(2 * _ATTEMPTS + 3, dtype=np.uint64)[None, :])
    area = (H * W).astype(np.float64)[:, None]
    lo, hi = policy.scale
    target = area * (lo + (hi - lo) * u[:, 0 : 2 * _ATTEMPTS : 2])
    lr0, lr1 = math.log(policy.ratio[0]), math.log(policy.ratio[1])
    aspect = np.exp(lr0 + (lr1 - lr0) * u[:, 1 : 2 * _ATTEMPTS : 2])
    w = np.round(np.sqrt(target * aspect)).astype(np.int64)
    h = np.round(np.sqrt(target / aspect)).astype(np.int64)
    ok = (w > 0) & (h > 0) & (w <= W[:, None]) & (h <= H[:, None])
    first = np.argmax(ok, axis=1)
    found = ok[np.arange(n), first]
    h = h[np.arange(n), first]
    w = w[np.arange(n), first]

    # Fallback: centre crop with the aspect ratio clamped to the allowed range.
    in_ratio = W / np.maximum(H, 1)
    cw = np.where(in_ratio < policy.ratio[0], W, np.where(in_ratio > policy.ratio[1], np.round(H * policy.ratio[1]), W)).astype(np.int64)
    ch = np.where(in_ratio < policy.ratio[0], np.round(W / policy.ratio[0]), H).astype(np.int64)
    h = np.where(found, h, np.minimum(ch, H))
    w = np.where(found, w, np.minimum(cw, W))
    uy, ux = u[:, 2 * _ATTEMPTS], u[:, 2 * _ATTEMPTS + 1]
    top = np.where(found, np.floor(uy * (H - h + 1)), (H - h) // 2).astype(np.int64)
    left = np.where(found, np.floor(ux * (W - w + 1)), (W - w) // 2).astype(np.int64)
    flips = u[:, 2 * _ATTEMPTS + 2] < policy.flip_prob
    return np.stack([top, left, h, w], axis=1).astype(np.int32), flips


def draw_mix(policy: MixPolicy, size: tuple[int, int], seed: int, epoch: int, batch: int, n: int) -> Mix | None:
    """The mixing of batch ``batch`` of ``epoch`` with ``n`` records, or None when not mixed."""
    if policy.kind == "none" or n < 1:
        return None
    g = np.random.default_rng(int(rng.hash64(seed, epoch, rng.STREAM_MIX, batch)))
    if g.random() >= policy.prob:
        return None
    partner = g.permutation(n).astype(np.int64)
    lam = float(g.beta(policy.alpha, policy.alpha))
    if policy.kind == "mixup":
        return Mix("mixup", partner, float(np.float32(lam)))
    Hh, Ww = _pair(size)
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(Hh * cut), int(Ww * cut)
    cy, cx = int(g.integers(Hh)), int(g.integers(Ww))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, Hh)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, Ww)
    lam = 1.0 - (y1 - y0) * (x1 - x0) / float(Hh * Ww)
    return Mix("cutmix", partner, float(np.float32(lam)), np.array([y0, x0, y1, x1], np.int32))
