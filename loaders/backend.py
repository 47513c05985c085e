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
