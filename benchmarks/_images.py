"""Benchmark image sets made from the colour photos that ship with scikit-image.

Each image is a random crop (random area and aspect) of one of the photos, resized with
OpenCV INTER_AREA: to ``size`` x ``size`` for a fixed-resolution (distilled-like) set, or
to a random side length for a variable-resolution (FKD / conventional data set) set.
Deterministic for a seed. Nothing downloads: the photos are files inside the package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

def photos() -> list[np.ndarray]:
    """The shipped colour photos as uint8 (H, W, 3)."""
    from distill.data import skimage_photos

    out = skimage_photos()
    if not out:
        raise RuntimeError("no scikit-image colour photos found; install scikit-image (the dev extra)")
    return out


def _random_view(rng: np.random.Generator, photo: np.ndarray) -> np.ndarray:
    H, W = photo.shape[:2]
    area = H * W * rng.uniform(0.1, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    h = int(min(H, max(8, round(np.sqrt(area / aspect)))))
    w = int(min(W, max(8, round(np.sqrt(area * aspect)))))
    top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
    view = photo[top : top + h, left : left + w]
    return view[:, ::-1] if rng.random() < 0.5 else view


def fixed_images(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """``n`` photo crops resized to ``size`` x ``size``: uint8 (n, size, size, 3)."""
    import cv2

    rng = np.random.default_rng(seed)
    src = photos()
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        out[i] = cv2.resize(_random_view(rng, src[i % len(src)]), (size, size), interpolation=cv2.INTER_AREA)
    return out


def variable_images(n: int, min_side: int = 160, max_side: int = 400, seed: int = 1) -> list[np.ndarray]:
    """``n`` photo crops of random size (each side in [min_side, max_side]): a list of uint8 (H, W, 3)."""
    import cv2

    rng = np.random.default_rng(seed)
    src = photos()
    out = []
    for i in range(n):
        h, w = (int(s) for s in rng.integers(min_side, max_side + 1, 2))
        out.append(cv2.resize(_random_view(rng, src[i % len(src)]), (w, h), interpolation=cv2.INTER_AREA))
    return out


def class_labels(n: int, num_classes: int = 1000) -> np.ndarray:
    """Class ids ``i % num_classes`` (a balanced labelling; the pixels do not depend on it)."""
    return (np.arange(n) % num_classes).astype(np.int64)


def write_image_folder(images, labels: np.ndarray, root: str | Path, ext: str = ".jpg", quality: int = 90) -> Path:
    """Save images as ``root/<class:04d>/<index:06d><ext>`` (torchvision ImageFolder layout)."""
    from PIL import Image

    root = Path(root)
    for i, (img, y) in enumerate(zip(images, labels)):
        d = root / f"{int(y):04d}"
        d.mkdir(parents=True, exist_ok=True)
        kw = {"quality": quality} if ext in (".jpg", ".jpeg") else {}
        Image.fromarray(np.asarray(img)).save(d / f"{i:06d}{ext}", **kw)
    return root
