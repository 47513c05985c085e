"""The image-set fingerprint: a hash that ties a label file to the exact images it labels."""
from __future__ import annotations

import hashlib
from typing import Iterable

import numpy as np

from .errors import LabelStoreError


class FingerprintBuilder:
    """Incremental fingerprint: feed images in index order, then read ``hexdigest()``.

    Each image contributes its shape and its uint8 pixel bytes (HWC, C-order), so the same
    pixels give the same fingerprint however they were stored (raw or a lossless format).
    """

    def __init__(self):
        self._h = hashlib.sha256(b"labelstore-image-set-v1")
        self.count = 0

    def update(self, image: np.ndarray) -> None:
        arr = np.ascontiguousarray(image)
        if arr.dtype != np.uint8:
            raise LabelStoreError(f"fingerprints are taken over uint8 pixels, got {arr.dtype}; convert images first")
        self._h.update(np.asarray(arr.shape, dtype="<u4").tobytes() + np.uint8(arr.ndim).tobytes())
        self._h.update(arr.tobytes())
        self.count += 1

    def hexdigest(self) -> str:
        h = self._h.copy()
        h.update(np.uint64(self.count).tobytes())
        return "sha256:" + h.hexdigest()


def image_set_fingerprint(images: Iterable[np.ndarray]) -> str:
    """Fingerprint of an ordered set of uint8 images (an array ``(N, H, W[, C])`` or any iterable)."""
    fb = FingerprintBuilder()
    for image in images:
        fb.update(image)
    return fb.hexdigest()


def check_fingerprint(expected: str | None, actual: str | None, what: str = "these images") -> None:
    """Raise unless both fingerprints are known and equal (an unknown one is accepted)."""
    if expected and actual and expected != actual:
        raise LabelStoreError(
            f"the label file belongs to another image set (fingerprint {expected[:19]}…, "
            f"{what} have {actual[:19]}…); pair it with the images it was made from, or relabel"
        )
