"""The seam between loader semantics and pixels: a backend turns crop records into images.

Everything a loader decides — which images form a batch, which crop and flip each gets,
how a batch is mixed, which label goes with it — is backend-independent (``loaders.replay``,
``loaders.schedules``). A backend does one job: given the batches of one epoch as crop
records, yield their pixels, cropped, flipped and resized to ``size``, in the same order.
Two backends exist: FFCV (``loaders.ffcv_backend``: the crop runs inside FFCV's compiled
pipeline) and the pure-PyTorch twin (``loaders.torch_backend``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch

from labelstore import LabelStoreError


@dataclass
class CropBatch:
    """One batch as crop records: image ids and, per record, its box and flip."""

    indices: np.ndarray  # (n,) int64 image ids
    boxes: np.ndarray  # (n, 4) int32 (top, left, height, width) in source pixels
    flips: np.ndarray  # (n,) bool: flip horizontally after cropping

    def __len__(self) -> int:
        return len(self.indices)


class PixelBackend(Protocol):
    """What every backend offers (see the module docstring)."""

    #: number of images, their (height, width) as an (N, 2) int64 array, and the image-set fingerprint
    num_images: int
    image_sizes: np.ndarray
    fingerprint: str | None

    def iter_batches(self, batches: Sequence[CropBatch], size: tuple[int, int]) -> Iterator[torch.Tensor]:
        """Yield, per CropBatch and in order, a CPU uint8 tensor ``(n, 3, H, W)`` (``size`` = (H, W)).

        Pixel semantics: crop ``image[top:top+height, left:left+width]``, resize to ``size``,
        then flip horizontally if asked. All batches of the call may be prefetched, so the
        whole list is given up front (one epoch, or one segment of an epoch).
        """
        ...


def check_crop_batch(cb: CropBatch, image_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a CropBatch against the images' sizes; returns int64 ids, int64 boxes, bool flips.

    Every backend calls this before touching pixels, so a crop that does not fit its image
    (labels made for other images, or another resolution) fails with the same clear message.
    """
    idx = np.asarray(cb.indices, np.int64).reshape(-1)
    boxes = np.asarray(cb.boxes, np.int64).reshape(-1, 4)
    flips = np.asarray(cb.flips, bool).reshape(-1)
    n = len(image_sizes)
    if not (len(idx) == len(boxes) == len(flips)):
        raise LabelStoreError(f"a CropBatch has {len(idx)} ids, {len(boxes)} boxes and {len(flips)} flips; they must agree")
    if len(idx) and ((idx < 0).any() or (idx >= n).any()):
        raise LabelStoreError(f"a crop record names image {int(idx.max())}, but the image set has {n} images")
    sizes = np.asarray(image_sizes)[idx]
    bad = (boxes[:, :2] < 0).any(1) | (boxes[:, 2:] < 1).any(1)
    bad |= (boxes[:, 0] + boxes[:, 2] > sizes[:, 0]) | (boxes[:, 1] + boxes[:, 3] > sizes[:, 1])
    if bad.any():
        j = int(np.argmax(bad))
        raise LabelStoreError(
            f"crop {tuple(int(v) for v in boxes[j])} of image {idx[j]} lies outside its "
            f"{tuple(int(v) for v in sizes[j])} pixels; the labels were made for images of another size"
        )
    return idx, boxes, flips
