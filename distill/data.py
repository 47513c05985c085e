"""Real data sets behind one small interface: uint8 NHWC images, int64 labels, a class count.

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist`; image folders and numpy
arrays (.npz) cover everything else; `skimage_photos()` gives the colour
photos that ship inside scikit-image. Nothing here downloads.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from labelstore.errors import LabelStoreError

__all__ = [
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "SKIMAGE_PHOTOS",
    "ImageDataset",
    "load_fashion_mnist",
    "fashion_mnist",
    "from_arrays",
    "load_npz",
    "save_npz",
    "load_image_folder",
    "open_dataset",
    "has_test_split",
    "is_named_dataset",
    "skimage_photos",
    "to_tensor",
]

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The colour photos that ship inside scikit-image (the others need a download).
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "hubble_deep_field",
)
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class ImageDataset:
    """A labelled image set held in memory: `images` uint8 (N,H,W,C), `labels` int64 (N,)."""

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str = "arrays"
    class_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        given = np.asarray(self.images)
        problem = _pixel_problem(given)  # judged on the array as the user gave it, not a reshaped one
        if problem:
            raise LabelStoreError(problem)
        self.images = given[..., None] if given.ndim == 3 else given  # grey (N,H,W) -> (N,H,W,1)
        self.labels = np.asarray(self.labels)
        if self.labels.dtype.kind not in "iu" and not (
                self.labels.dtype.kind == "f" and np.array_equal(self.labels, np.round(self.labels))):
            raise LabelStoreError(f"labels must be integer class ids; got {self.labels.dtype} {self.labels.shape}")
        self.labels = self.labels.astype(np.int64)
        if self.labels.shape != (len(self.images),):
            raise LabelStoreError(
                f"{len(self.images)} images but labels shaped {self.labels.shape}; need one label per image"
            )
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise LabelStoreError(
                f"labels must lie in [0, {self.num_classes}); found {self.labels.min()}..{self.labels.max()}"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise LabelStoreError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def image_size(self) -> int:
        """Side of the (square) images; the larger side for non-square ones."""
        return int(max(self.images.shape[1:3]))

    def subset_indices(self, n: int | None = None, seed: int = 0) -> np.ndarray:
        """Sorted indices of the class-balanced random subset `subset(n, seed)` takes (all with n None)."""
        if n is None or n >= len(self):
            return np.arange(len(self))
        rng = np.random.default_rng(seed)
        per_class = max(1, n // self.num_classes)
        indices = np.concatenate([
            rng.permutation(np.flatnonzero(self.labels == c))[:per_class] for c in range(self.num_classes)
        ])
        indices.sort()
        return indices

    def subset(self, n: int | None = None, seed: int = 0, indices: np.ndarray | None = None) -> "ImageDataset":
        """A class-balanced random subset of about `n` images (or exactly `indices`)."""
        if indices is None:
            if n is None or n >= len(self):
                return self
            indices = self.subset_indices(n, seed)
        return ImageDataset(self.images[indices], self.labels[indices], self.num_classes,
                            self.name, self.class_names)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the pixels on a 0..1 scale (for normalisation)."""
        x = self.images.reshape(-1, self.in_channels).astype(np.float64) / 255.0
        return x.mean(0).tolist(), x.std(0).tolist()


def _pixel_problem(x: np.ndarray) -> str | None:
    """What is wrong with `x` as uint8 image pixels, in the user's terms and with the fix; None if fine."""
    what = f"{x.shape} {x.dtype}"
    if x.ndim == 2:
        side = int(round(math.sqrt(x.shape[1]))) if x.shape[1] else 0
        fix = f"x.reshape(-1, {side}, {side})" if side * side == x.shape[1] and side > 1 else "x.reshape(-1, H, W)"
        return f"images are {what}: flat rows; reshape them to (N, H, W) or (N, H, W, C), e.g. {fix}"
    if x.ndim not in (3, 4):
        return f"images are {what}; they must be (N, H, W) grey or (N, H, W, C) arrays"
    if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        return (f"images are {what}, channels first (N, C, H, W); they must be channels last: "
                "np.transpose(x, (0, 2, 3, 1))")
    if x.dtype == np.uint8:
        return None
    if x.dtype.kind not in "iuf" or x.size == 0:
        return f"images are {what}; they must be uint8 pixels 0..255"
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    rng = f"values {lo:g}..{hi:g}"
    if not np.isfinite(x).all():
        return f"images are {what} with NaN or inf values; they must be uint8 pixels 0..255"
    if lo >= 0 and hi <= 1 and x.dtype.kind == "f":
        fix = "(x * 255).round().astype(np.uint8)"
    elif lo >= 0:
        fix = f"(x * (255 / {hi:g})).round().astype(np.uint8)" if hi > 0 else "x.astype(np.uint8)"
    else:
        fix = "((x - x.min()) / (x.max() - x.min()) * 255).round().astype(np.uint8)"
    return f"images are {what} with {rng}; distill needs uint8 pixels 0..255: scale them, e.g. {fix}"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise LabelStoreError(f"{path} is not a uint8 idx file (magic {data[:4].hex()})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST `split` ("train" 60k / "test" 10k): images uint8 (N,28,28), labels int64."""
    if split not in _FMNIST_FILES:
        raise LabelStoreError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    paths = [root / f for f in _FMNIST_FILES[split]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise LabelStoreError(
            f"Fashion-MNIST not found ({', '.join(missing)} missing); install it with "
            "`apt-get install dataset-fashion-mnist` or set FASHION_MNIST_DIR"
        )
    images = _read_idx(paths[0])
    labels = _read_idx(paths[1]).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise LabelStoreError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def fashion_mnist(split: str = "train", root: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST as an ImageDataset (N,28,28,1)."""
    images, labels = load_fashion_mnist(split, root)
    return ImageDataset(images[..., None], labels, 10, "fashion-mnist", list(FASHION_MNIST_CLASSES))


def from_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int | None = None,
                name: str = "arrays", class_names: list[str] | None = None) -> ImageDataset:
    """Wrap numpy arrays; the class count defaults to max(label)+1."""
    labels = np.asarray(labels)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    return ImageDataset(np.asarray(images), labels, int(num_classes), name, class_names)


def save_npz(path: str | Path, ds: ImageDataset, **extra: np.ndarray) -> Path:
    """Write `images`, `labels`, `num_classes` (and `class_names`, extra arrays) to a compressed .npz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if ds.class_names:
        extra = {"class_names": np.asarray(ds.class_names, dtype=str), **extra}
    np.savez_compressed(path, images=ds.images, labels=ds.labels,
                        num_classes=np.int64(ds.num_classes), **extra)
    return path


def load_npz(path: str | Path, num_classes: int | None = None) -> ImageDataset:
    """An .npz with `images` (uint8 NHWC or NHW) and `labels` (optionally `num_classes`, `class_names`)."""
    path = Path(path)
    names = None
    try:
        with np.load(path) as z:
            if "images" not in z or "labels" not in z:
                raise LabelStoreError(f"{path} must contain arrays 'images' and 'labels'; has {list(z.keys())}")
            images, labels = z["images"], z["labels"]
            if num_classes is None and "num_classes" in z:
                num_classes = int(z["num_classes"])
            if "class_names" in z:
                names = [str(n) for n in z["class_names"].tolist()]
    except (OSError, ValueError) as e:
        raise LabelStoreError(f"cannot read {path} as a numpy .npz archive: {e}") from None
    try:
        return from_arrays(images, labels, num_classes, name=path.stem, class_names=names)
    except LabelStoreError as e:  # say which file: the user fixes the file, not our array
        raise LabelStoreError(f"{path}: {e}") from None


# PIL modes of more than 8 bits per channel: converting them to "L" or "RGB" clips, silently
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def load_image_folder(root: str | Path, image_size: int | None = None, grayscale: bool | None = None,
                      name: str | None = None) -> ImageDataset:
    """`root/<class>/<image>` files (class = sorted folder name), resized to `image_size` squares.

    `grayscale` None keeps a folder of grey images grey (1 channel) and makes anything else RGB.
    Without `image_size`, all images must already share one size.
    """
    from PIL import Image

    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise LabelStoreError(f"{root} has no class sub-folders; expected root/<class>/<image files>")
    files = [(c, f) for c, cls in enumerate(classes) for f in sorted((root / cls).iterdir())
             if f.suffix.lower() in _IMAGE_EXTS]
    if not files:
        raise LabelStoreError(f"no image files ({', '.join(sorted(_IMAGE_EXTS))}) under {root}")
    opened = []
    for c, f in files:
        img = Image.open(f)
        if img.mode in _WIDE_MODES:
            raise LabelStoreError(f"{f} is a {img.mode} image (more than 8 bits a pixel); distill reads 8-bit "
                                  "images: scale it to 0..255 and save it as 8-bit (PIL mode L or RGB)")
        opened.append((c, img))
    if grayscale is None:  # a grey folder stays grey: RGB copies would triple the pixels for nothing
        grayscale = all(img.mode in ("L", "LA", "1") for _, img in opened)
    images, labels = [], []
    for c, img in opened:
        img = img.convert("L" if grayscale else "RGB")
        if image_size is not None:
            img = img.resize((image_size, image_size), Image.BILINEAR)
        images.append(np.asarray(img, dtype=np.uint8))
        labels.append(c)
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise LabelStoreError(f"images under {root} differ in size ({len(shapes)} sizes); pass image_size=... "
                              "(--image-size on the command line)")
    return ImageDataset(np.stack(images), np.asarray(labels), len(classes), name or root.name, classes)


_NAMED = ("fashion-mnist", "fashion_mnist", "fmnist")


def is_named_dataset(spec: str) -> bool:
    """True for the data sets known by name (Fashion-MNIST), False for files and folders."""
    return spec.lower() in _NAMED


def has_test_split(spec: str) -> bool:
    """Whether `spec` has its own test split: Fashion-MNIST, a folder with train/ and test/.
    An .npz or a plain folder of classes is one set of images, with no test split."""
    if is_named_dataset(spec):
        return True
    path = Path(spec)
    return path.is_dir() and (path / "train").is_dir() and (path / "test").is_dir()


def open_dataset(spec: str, split: str = "train", image_size: int | None = None) -> ImageDataset:
    """Resolve a data-set spec: "fashion-mnist", a .npz file, or an image folder.

    A folder with `train/` (and `test/`) sub-folders has splits; an .npz or a plain folder of
    classes is one set, its "train" split; asking one for "test" is an error (never its
    training images under another name). split "all" is the whole of a one-set source.
    """
    if split not in ("train", "test", "all"):
        raise LabelStoreError(f"split must be 'train', 'test' or 'all', not {split!r}")
    if is_named_dataset(spec):
        if split == "all":
            raise LabelStoreError("fashion-mnist has a train and a test split; name one")
        return fashion_mnist(split)
    path = Path(spec)
    if path.suffix == ".npz" or (path.is_dir() and not (path / "train").is_dir()):
        if not path.exists():
            raise LabelStoreError(f"data file {path} does not exist")
        if split == "test":
            raise LabelStoreError(
                f"{path} is one set of images with no test split (an .npz holds one set; a folder needs "
                "train/ and test/ sub-folders): give the test set itself (--test-data), or hold out part of it")
        return load_npz(path) if path.suffix == ".npz" else load_image_folder(path, image_size)
    if path.is_dir():
        if split == "all":
            raise LabelStoreError(f"{path} has split sub-folders (train/ ...); name one")
        if not (path / split).is_dir():
            raise LabelStoreError(f"{path} has no {split}/ sub-folder: give the {split} set itself, or hold out "
                                  "part of the training set")
        return load_image_folder(path / split, image_size, name=f"{path.name}/{split}")
    raise LabelStoreError(
        f"unknown data set {spec!r}: use 'fashion-mnist', a .npz file with images/labels, "
        "or a folder of class sub-folders"
    )


def skimage_photos(names: tuple[str, ...] = SKIMAGE_PHOTOS) -> list[np.ndarray]:
    """The colour photos shipped with scikit-image, uint8 HWC RGB, in `names` order.

    Photos that would need a download (or fail to load) are skipped.
    """
    try:
        import skimage.data
    except ImportError:
        raise LabelStoreError("skimage_photos() needs scikit-image: `pip install scikit-image`") from None
    photos = []
    for name in names:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # needs pooch / a download: unavailable offline, skip it
            continue
        img = np.asarray(img)
        if img.ndim == 3 and img.shape[-1] == 4:
            img = img[..., :3]
        if img.ndim == 3 and img.shape[-1] == 3:
            photos.append(np.ascontiguousarray(img, dtype=np.uint8))
    return photos


def to_tensor(images: np.ndarray, mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...],
              device: "str | None" = None):
    """uint8 NHWC -> normalised float32 NCHW torch tensor ((x/255 - mean) / std)."""
    import torch

    x = torch.from_numpy(np.require(images, requirements=["C", "W"]))  # read-only arrays (np.frombuffer) are copied
    if device is not None:
        x = x.to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
