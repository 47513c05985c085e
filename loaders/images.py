"""Image sources: one view over the ways users hold a distilled or conventional image set.

Every source gives ``num_images``, ``image_sizes`` ((N, 2) int64, height and width), the
class ``labels`` when known, ``get(i)`` (a uint8 ``(H, W, C)`` or gray ``(H, W)`` array) and
the image-set ``fingerprint``. The fingerprint rule, shared with the FFCV beton writer, is:
fingerprint the uint8 arrays exactly as the user passed them (gray stays ``(H, W)``; a
folder's files are decoded as gray ``(H, W)`` when they are 8-bit gray, else RGB).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from labelstore import LabelStoreError, image_set_fingerprint

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")


class ImageSource:
    """Base class: subclasses set ``num_images`` and implement ``get`` (and may override sizes)."""

    num_images: int
    labels: np.ndarray | None = None

    def get(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_images

    @cached_property
    def image_sizes(self) -> np.ndarray:
        return np.array([self.get(i).shape[:2] for i in range(self.num_images)], dtype=np.int64).reshape(-1, 2)

    @cached_property
    def fingerprint(self) -> str:
        """The image-set fingerprint (computed once, on first use: it reads every image)."""
        return image_set_fingerprint(self.get(i) for i in range(self.num_images))


def _check_image(img: Any, where: str) -> np.ndarray:
    """An image as a uint8 ``(H, W)`` or ``(H, W, C)`` numpy array (torch CHW tensors are moved to HWC)."""
    if isinstance(img, torch.Tensor):
        t = img.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4) and t.shape[-1] not in (1, 3, 4):
            t = t.permute(1, 2, 0)  # torchvision's CHW -> HWC
        img = t.numpy()
    elif not isinstance(img, np.ndarray):
        img = np.asarray(img)  # PIL images and array-likes
    if img.dtype != np.uint8:
        raise LabelStoreError(f"{where} has dtype {img.dtype}; images must be uint8 (0..255): convert them first")
    if img.ndim == 3 and img.shape[-1] not in (1, 3, 4) or img.ndim not in (2, 3):
        raise LabelStoreError(f"{where} has shape {img.shape}; expected (H, W) gray or (H, W, C) with C in 1, 3, 4")
    return img


def check_labels(labels, n: int) -> np.ndarray | None:
    """`labels` as `n` int64 class ids (None passes), or a LabelStoreError saying what is wrong."""
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.shape != (n,) or arr.dtype.kind not in "iu" or (arr < 0).any():
        raise LabelStoreError(f"labels must be {n} non-negative integer class ids, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


class ArraySource(ImageSource):
    """A stack of equal-size images: uint8 ``(N, H, W, C)`` or gray ``(N, H, W)``."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | None = None):
        arr = np.asarray(images)
        if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] not in (1, 3, 4)):
            raise LabelStoreError(
                f"an image array must be uint8 (N, H, W, C) or gray (N, H, W); got {arr.dtype} {arr.shape}"
            )
        self.images = arr
        self.num_images = len(arr)
        self.labels = check_labels(labels, self.num_images)

    def get(self, i: int) -> np.ndarray:
        return self.images[i]

    @cached_property
    def image_sizes(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.images.shape[1:3], np.int64), (self.num_images, 2)).copy()

    @cached_property
    def fingerprint(self) -> str:
        return image_set_fingerprint(self.images)


class ListSource(ImageSource):
    """Images of different sizes: a list of uint8 ``(H, W[, C])`` arrays."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[int] | None = None):
        self.images = [_check_image(im, f"image {i}") for i, im in enumerate(images)]
        self.num_images = len(self.images)
        self.labels = check_labels(labels, self.num_images)

    def get(self, i: int) -> np.ndarray:
        return self.images[i]


class FolderSource(ImageSource):
    """``root/<class>/<image>`` files (classes = sorted folder names), decoded on demand with PIL."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        classes = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        if not classes:
            raise LabelStoreError(f"{self.root} has no class sub-folders; expected root/<class>/<image files>")
        files, labels = [], []
        for c, name in enumerate(classes):
            for f in sorted((self.root / name).iterdir()):
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(f)
                    labels.append(c)
        if not files:
            raise LabelStoreError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {self.root}")
        self.classes, self.files = classes, files
        self.num_images = len(files)
        self.labels = np.asarray(labels, np.int64)

    def get(self, i: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.files[i]) as img:
            # 8-bit gray files stay (H, W) (as the beton writer stores them); everything else is RGB
            img = img.convert("L") if img.mode in ("L", "1") else img.convert("RGB")
            return np.asarray(img, dtype=np.uint8)

    @cached_property
    def image_sizes(self) -> np.ndarray:
        from PIL import Image

        sizes = []
        for f in self.files:  # headers only: no decoding
            with Image.open(f) as img:
                sizes.append((img.height, img.width))
        return np.asarray(sizes, np.int64).reshape(-1, 2)


class DatasetSource(ImageSource):
    """Any indexable dataset whose items are ``(image, label)`` (PIL, uint8 HWC array or CHW tensor)."""

    def __init__(self, dataset: Any):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise LabelStoreError(f"a dataset must support len() and [i]; got {type(dataset).__name__}")
        self.dataset = dataset
        self.num_images = len(dataset)

    def _item(self, i: int):
        item = self.dataset[i]
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise LabelStoreError(f"dataset item {i} is a {type(item).__name__}; items must be (image, label)")
        return item

    def get(self, i: int) -> np.ndarray:
        return _check_image(self._item(i)[0], f"dataset item {i}")

    @cached_property
    def labels(self) -> np.ndarray:  # type: ignore[override]
        return check_labels([int(self._item(i)[1]) for i in range(self.num_images)], self.num_images)


def as_image_source(images: Any, labels: Sequence[int] | None = None) -> ImageSource:
    """Wrap what the user has: an array, a list of arrays, a folder path, a dataset, or a source."""
    if isinstance(images, ImageSource):
        if labels is not None:
            images.labels = check_labels(labels, images.num_images)
        return images
    if isinstance(images, (str, Path)):
        if labels is not None:
            raise LabelStoreError("an image folder takes its labels from its class sub-folders; don't pass labels=")
        return FolderSource(images)
    if isinstance(images, np.ndarray):
        return ArraySource(images, labels)
    if isinstance(images, torch.Tensor):
        raise LabelStoreError("pass images as a uint8 numpy array (N, H, W, C), e.g. tensor.permute(0, 2, 3, 1).numpy()")
    if isinstance(images, (list, tuple)):
        if not (images and isinstance(images[0], (tuple, list))):
            return ListSource(images, labels)  # else: a list of (image, label) pairs is a dataset
    if hasattr(images, "__getitem__") and hasattr(images, "__len__"):  # a dataset of (image, label)
        src = DatasetSource(images)
        if labels is not None:
            src.labels = check_labels(labels, src.num_images)
        return src
    raise LabelStoreError(
        f"cannot read images from a {type(images).__name__}: pass a uint8 array, a list of arrays, "
        "an image folder path or a dataset of (image, label)"
    )
