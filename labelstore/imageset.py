"""What ``pack --images`` learns from the image set labels belong to: how many images, their
sizes and fingerprint, read without torch (an image count is never guessed from label files
that may be missing some batches).

Sources: a ``.npy`` / ``.npz`` of uint8 images (``images`` key, NHWC or NHW), an FFCV
``.beton`` (its labelstore sidecar when present, else the count from FFCV's file header), or
an image folder ``root/<class>/<image files>`` (counted in ImageFolder order; sizes read
from the file headers when Pillow is installed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LabelStoreError
from .fingerprint import image_set_fingerprint

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
# FFCV 1.0's file header: version u2, num_fields u2, page_size u4, num_samples u8, alloc_table_ptr u8
_FFCV_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"),
                         ("num_samples", "<u8"), ("alloc_table_ptr", "<u8")])


@dataclass
class ImageSetInfo:
    num_images: int
    image_sizes: np.ndarray | None  # (N, 2) height, width; None when unknown
    fingerprint: str | None
    what: str  # for notes: where the facts came from


def describe_image_set(path: str | Path) -> ImageSetInfo:
    """Count, sizes and fingerprint of the image set at ``path`` (what is knowable without torch)."""
    p = Path(path)
    if not p.exists():
        raise LabelStoreError(f"--images {p} does not exist")
    sfx = p.suffix.lower()
    if sfx in (".npy", ".npz"):
        return _arrays(p)
    if sfx == ".beton":
        return _beton(p)
    if p.is_dir():
        return _folder(p)
    raise LabelStoreError(f"--images takes a .npy/.npz of uint8 images, a .beton or an image folder root/<class>/<files>; got {p}")


def _arrays(p: Path) -> ImageSetInfo:
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as z:
                if "images" not in z.files:
                    raise LabelStoreError(f"{p} has no 'images' array (it has {', '.join(z.files) or 'none'})")
                arr = z["images"]
    except LabelStoreError:
        raise
    except Exception as exc:
        raise LabelStoreError(f"cannot read {p} as numpy images ({exc})") from None
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4):
        raise LabelStoreError(f"{p}: images are {arr.shape} {arr.dtype}; expected uint8 (N, H, W) or (N, H, W, C) "
                              "(scale to 0..255 and convert to uint8 first)")
    sizes = np.broadcast_to(np.asarray(arr.shape[1:3], np.int64), (arr.shape[0], 2)).copy()
    return ImageSetInfo(int(arr.shape[0]), sizes, image_set_fingerprint(arr), f"{arr.shape[0]} images in {p.name}")


def _beton(p: Path) -> ImageSetInfo:
    meta_json, meta_npz = p.with_name(p.name + ".meta.json"), p.with_name(p.name + ".meta.npz")
    if meta_json.is_file() and meta_npz.is_file():  # written by loaders.write_beton
        try:
            meta = json.loads(meta_json.read_text())
            with np.load(meta_npz) as z:
                sizes = z["image_sizes"].astype(np.int64)
        except Exception as exc:
            raise LabelStoreError(f"the sidecar of {p} is unreadable ({exc}); rewrite the beton with loaders.write_beton") from None
        if meta.get("beton_bytes") != p.stat().st_size or int(meta.get("num_images", -1)) != len(sizes):
            raise LabelStoreError(f"the sidecar {meta_json.name} does not describe {p.name}; rewrite both with loaders.write_beton")
        return ImageSetInfo(len(sizes), sizes, meta.get("image_fingerprint") or None, f"{len(sizes)} images in {p.name}")
    try:
        with open(p, "rb") as fh:
            head = np.frombuffer(fh.read(_FFCV_HEADER.itemsize), _FFCV_HEADER)
    except OSError as exc:
        raise LabelStoreError(f"cannot read {p}: {exc.strerror}") from None
    if len(head) != 1 or int(head[0]["num_samples"]) == 0:
        raise LabelStoreError(f"{p} is not an FFCV .beton (its header is unreadable)")
    n = int(head[0]["num_samples"])
    return ImageSetInfo(n, None, None, f"{n} samples in the FFCV header of {p.name}")


def _folder(p: Path) -> ImageSetInfo:
    classes = sorted(d for d in p.iterdir() if d.is_dir())
    files = [f for c in classes for f in sorted(c.iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise LabelStoreError(f"no image files under {p}; --images takes root/<class>/<image files> (ImageFolder order)")
    sizes = None
    try:
        from PIL import Image

        hw = []
        for f in files:  # headers only, no decoding
            with Image.open(f) as img:
                hw.append((img.height, img.width))
        sizes = np.asarray(hw, np.int64)
    except ImportError:
        pass
    return ImageSetInfo(len(files), sizes, None, f"{len(files)} image files under {p.name}/")
