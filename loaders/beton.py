"""Writing and opening the FFCV ``.beton`` that holds an image set, with its sidecar.

``write_beton`` takes what the user has (a uint8 array, a list of variable-size arrays, an
image folder, a dataset of ``(image, label)``) and writes FFCV's ``RGBImageField`` (raw or
JPEG) plus an ``IntField`` label when labels are known. Beside the beton it writes a small
sidecar — ``<path>.meta.json`` (image-set fingerprint, write settings) and
``<path>.meta.npz`` (image sizes, labels) — because label files and the loader check the
fingerprint. ``open_beton`` reads both back and cross-checks them against the beton itself.

Pixel rules: FFCV stores 3 channels, so gray images are stored replicated to RGB and an
alpha channel is dropped; the fingerprint is taken over the arrays exactly as given (gray
stays ``(H, W)``, see ``loaders.images``). JPEG is lossy: the fingerprint is of the source
pixels, the decoded pixels differ from them. With ``max_resolution`` the images are
shrunk (OpenCV INTER_AREA, as FFCV does) *before* fingerprinting, so the fingerprint and
sizes describe the pixels the loader actually crops.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from labelstore import FingerprintBuilder, LabelStoreError

from .images import ImageSource, as_image_source

SIDECAR_FORMAT = "labelstore-beton-meta"
SIDECAR_VERSION = 1
WRITE_MODES = ("raw", "jpg")
_MAX_SIDE = 65535  # FFCV stores width and height as u2


@dataclass
class BetonInfo:
    """What a written ``.beton`` holds: image count and sizes as stored, labels, fingerprint."""

    path: Path
    num_images: int
    image_sizes: np.ndarray  # (N, 2) int64 (height, width) of the stored images
    fingerprint: str | None  # None for a beton written without labelstore-kit (no sidecar)
    labels: np.ndarray | None  # (N,) int64 class ids, or None
    num_classes: int | None
    write_mode: str  # "raw", "jpg" or "unknown" (foreign beton)
    jpeg_quality: int | None
    channels: int | None  # channels of the source images (1 gray, 3 RGB, 4 RGBA); None if unknown
    image_field: str = "image"
    label_field: str | None = "label"

    @property
    def lossless(self) -> bool:
        """True when decoding gives back the source pixels (raw mode; gray replicated to RGB)."""
        return self.write_mode == "raw"

    @property
    def meta_path(self) -> Path:
        return sidecar_paths(self.path)[0]


def sidecar_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<path>.meta.json, <path>.meta.npz)``."""
    p = Path(path)
    return p.with_name(p.name + ".meta.json"), p.with_name(p.name + ".meta.npz")


# -- writing ------------------------------------------------------------------------------
def _shrink(image: np.ndarray, max_resolution: int | None) -> np.ndarray:
    """FFCV's ``resizer``: shrink so the longer side is ``max_resolution`` (INTER_AREA); never enlarge."""
    if max_resolution is None:
        return image
    import cv2

    h, w = image.shape[:2]
    ratio = max_resolution / max(h, w)
    if ratio >= 1:
        return image
    new = (int(ratio * w), int(ratio * h))  # the same rounding as ffcv.fields.rgb_image.resizer
    out = cv2.resize(image, new, interpolation=cv2.INTER_AREA)
    return out.reshape(out.shape[:2] + image.shape[2:]) if image.ndim == 3 and out.ndim == 2 else out


def _to_rgb(image: np.ndarray) -> np.ndarray:
    """What FFCV's RGBImageField stores: (H, W, 3) uint8; gray replicated, alpha dropped."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


class _StoredItems:
    """The dataset FFCV's writer processes read: ``(rgb image, label)`` or ``(rgb image,)``."""

    def __init__(self, source: ImageSource, max_resolution: int | None, labels: np.ndarray | None):
        self.source, self.max_resolution, self.labels = source, max_resolution, labels

    def __len__(self) -> int:
        return self.source.num_images

    def __getitem__(self, i: int):
        image = _to_rgb(_shrink(self.source.get(int(i)), self.max_resolution))
        return (image,) if self.labels is None else (image, int(self.labels[i]))


def write_beton(
    images: Any,
    path: str | Path,
    *,
    labels: Sequence[int] | None = None,
    num_classes: int | None = None,
    write_mode: str = "raw",
    jpeg_quality: int = 90,
    max_resolution: int | None = None,
    num_workers: int | None = None,
    overwrite: bool = True,
    progress: bool = True,
) -> BetonInfo:
    """Write ``images`` (array, list of arrays, folder, or dataset of (image, label)) to an FFCV beton.

    Labels come from ``labels=``, from the folder's class sub-folders, or from the dataset's
    items; with labels the beton gets an ``IntField`` named ``label``. Returns what
    ``open_beton`` would read back.
    """
    from tqdm import tqdm

    if write_mode not in WRITE_MODES:
        raise LabelStoreError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
    if write_mode == "jpg" and not 1 <= int(jpeg_quality) <= 100:
        raise LabelStoreError(f"jpeg_quality must lie in 1..100, got {jpeg_quality}")
    if max_resolution is not None and int(max_resolution) < 1:
        raise LabelStoreError(f"max_resolution must be a positive side length, got {max_resolution}")
    path = Path(path)
    if path.suffix != ".beton":
        raise LabelStoreError(f"{path}: name the file <something>.beton")
    if path.exists() and not overwrite:
        raise LabelStoreError(f"{path} already exists; choose another path or pass overwrite=True")
    if not path.parent.is_dir():
        raise LabelStoreError(f"the folder {path.parent} does not exist; create it first")

    source = as_image_source(images, labels)
    n = source.num_images
    if n < 1:
        raise LabelStoreError("the image set is empty; nothing to write")
    lab = source.labels  # may read a dataset once
    if lab is not None:
        lab = np.asarray(lab, np.int64)
        num_classes = int(num_classes) if num_classes is not None else int(lab.max()) + 1
        if lab.max() >= num_classes:
            raise LabelStoreError(f"labels reach {int(lab.max())} but num_classes is {num_classes}")

    # One pass in index order: check every image (a worker that raises would hang FFCV's
    # writer), fingerprint it as given (after any shrinking), and note its stored size.
    fb = FingerprintBuilder()
    sizes = np.empty((n, 2), np.int64)
    channels = set()
    for i in tqdm(range(n), desc="checking images", disable=not progress or n < 1000, leave=False):
        image = _shrink(source.get(i), max_resolution)
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            raise LabelStoreError(f"image {i} is {image.dtype} {image.shape}; images must be uint8 (H, W) or (H, W, C), C in 1, 3, 4")
        if min(image.shape[:2]) < 1 or max(image.shape[:2]) > _MAX_SIDE:
            raise LabelStoreError(f"image {i} is {image.shape[:2]}; FFCV stores sides of 1..{_MAX_SIDE} pixels (use max_resolution=)")
        fb.update(image)
        sizes[i] = image.shape[:2]
        channels.add(1 if image.ndim == 2 else image.shape[2])

    try:
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
    except ImportError as exc:
        raise LabelStoreError(f"FFCV is not installed ({exc}); install the extra: pip install 'labelstore-kit[ffcv]'") from None

    fields = {"image": RGBImageField(write_mode=write_mode, jpeg_quality=int(jpeg_quality))}
    if lab is not None:
        fields["label"] = IntField()
    workers = int(num_workers) if num_workers else max(1, min(os.cpu_count() or 1, -(-n // 100)))
    tmp = path.with_name(path.name + ".tmp")
    writer = DatasetWriter(str(tmp), fields, num_workers=workers)
    import ffcv.writer as _ffcv_writer

    shown = _ffcv_writer.tqdm
    if not progress:  # FFCV's writer always draws its own bar
        _ffcv_writer.tqdm = lambda *a, **k: tqdm(*a, **{**k, "disable": True})
    try:
        writer.from_indexed_dataset(_StoredItems(source, max_resolution, lab), chunksize=max(1, min(100, -(-n // workers))))
        os.replace(tmp, path)
    finally:
        _ffcv_writer.tqdm = shown
        if tmp.exists():
            tmp.unlink()

    meta = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "num_images": n,
        "image_fingerprint": fb.hexdigest(),
        "write_mode": write_mode,
        "jpeg_quality": int(jpeg_quality) if write_mode == "jpg" else None,
        "max_resolution": int(max_resolution) if max_resolution is not None else None,
        "channels": sorted(channels)[0] if len(channels) == 1 else sorted(channels),
        "num_classes": num_classes if lab is not None else None,
        "beton_bytes": path.stat().st_size,
    }
    jpath, npath = sidecar_paths(path)
    arrays = {"image_sizes": sizes} if lab is None else {"image_sizes": sizes, "labels": lab}
    with open(npath.with_name(npath.name + ".tmp"), "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(npath.with_name(npath.name + ".tmp"), npath)
    jpath.with_name(jpath.name + ".tmp").write_text(json.dumps(meta, indent=1))
    os.replace(jpath.with_name(jpath.name + ".tmp"), jpath)
    return open_beton(path)


# -- opening ------------------------------------------------------------------------------
def _read_beton(path: Path):
    """FFCV's own reader over the file; every failure becomes a LabelStoreError."""
    if not path.exists():
        raise LabelStoreError(f"no .beton at {path}; write one with loaders.write_beton(images, {str(path)!r})")
    try:
        from ffcv.reader import Reader
    except ImportError as exc:
        raise LabelStoreError(f"FFCV is not installed ({exc}); install the extra: pip install 'labelstore-kit[ffcv]'") from None
    try:
        reader = Reader(str(path))
        _ = reader.alloc_table  # read in __init__; touching it keeps the intent explicit
    except Exception as exc:  # numpy/ffcv raise ValueError, AssertionError, IndexError, ... on damage
        raise LabelStoreError(
            f"{path} is not a readable FFCV .beton ({type(exc).__name__}: {exc}); rewrite it with loaders.write_beton"
        ) from None
    if int(reader.num_samples) != len(reader.metadata):
        raise LabelStoreError(f"{path} is truncated ({len(reader.metadata)} of {int(reader.num_samples)} samples readable); rewrite it")
    return reader


def open_beton(path: str | Path) -> BetonInfo:
    """Read a beton's sidecar and check it against the beton (sizes, labels, byte size)."""
    path = Path(path)
    reader = _read_beton(path)  # raises LabelStoreError when FFCV is missing
    from ffcv.fields import IntField, RGBImageField

    image_fields = [k for k, h in reader.handlers.items() if isinstance(h, RGBImageField)]
    if not image_fields:
        raise LabelStoreError(f"{path} has no RGB image field (fields: {reader.field_names}); write it with loaders.write_beton")
    image_field = "image" if "image" in image_fields else image_fields[0]
    label_fields = [k for k, h in reader.handlers.items() if isinstance(h, IntField)]
    label_field = ("label" if "label" in label_fields else label_fields[0]) if label_fields else None
    md = reader.metadata
    col = {name: f"f{i}" for i, name in enumerate(reader.field_names)}  # metadata columns are f0, f1, ...
    sizes = np.stack([md[col[image_field]]["height"], md[col[image_field]]["width"]], axis=1).astype(np.int64)
    beton_labels = md[col[label_field]].astype(np.int64) if label_field else None
    n = len(md)

    jpath, npath = sidecar_paths(path)
    if not jpath.exists():  # a beton written by FFCV directly: usable, but no fingerprint to check
        modes = np.unique(md[col[image_field]]["mode"])
        mode = {0: "jpg", 1: "raw"}.get(int(modes[0]), "unknown") if len(modes) == 1 else "unknown"
        return BetonInfo(path, n, sizes, None, beton_labels,
                         int(beton_labels.max()) + 1 if beton_labels is not None and n else None,
                         mode, None, None, image_field, label_field)
    try:
        meta = json.loads(jpath.read_text())
        with np.load(npath) as z:
            side_sizes = z["image_sizes"].astype(np.int64)
            side_labels = z["labels"].astype(np.int64) if "labels" in z else None
    except FileNotFoundError:
        raise LabelStoreError(f"{npath} is missing; rewrite the beton with loaders.write_beton") from None
    except Exception as exc:
        raise LabelStoreError(f"the sidecar of {path} is unreadable ({exc}); rewrite the beton with loaders.write_beton") from None
    if meta.get("format") != SIDECAR_FORMAT or int(meta.get("version", 0)) > SIDECAR_VERSION:
        raise LabelStoreError(f"{jpath} is not a labelstore beton sidecar of a version this code reads; upgrade labelstore-kit or rewrite it")
    stale = (
        meta["num_images"] != n
        or meta["beton_bytes"] != path.stat().st_size
        or not np.array_equal(side_sizes, sizes)
        or (side_labels is None) != (beton_labels is None)
        or (side_labels is not None and not np.array_equal(side_labels, beton_labels))
    )
    if stale:
        raise LabelStoreError(
            f"the sidecar {jpath.name} does not describe {path.name} (sizes, labels or byte size differ): "
            "the beton was replaced or modified; rewrite both with loaders.write_beton"
        )
    ch = meta.get("channels")
    return BetonInfo(
        path, n, sizes, meta["image_fingerprint"], side_labels, meta.get("num_classes"), meta["write_mode"],
        meta.get("jpeg_quality"), ch if isinstance(ch, int) else None, image_field, label_field,
    )
