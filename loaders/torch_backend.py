"""The pure-PyTorch pixel backend: a Dataset keyed by crop records, batched by a DataLoader.

Each sample is cropped, resized (bilinear, antialiased, torchvision v2) and flipped on its
own before batching, so variable-size images work. Same semantics as the FFCV backend; it is
the loader for machines without FFCV and the baseline benchmarks compare against.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


from .backend import CropBatch, check_crop_batch
from .images import ImageSource, as_image_source


def crop_resize_flip(image: np.ndarray, box: Sequence[int], flip: bool, size: tuple[int, int]) -> torch.Tensor:
    """``image[top:top+h, left:left+w]`` resized to ``size``, flipped if asked: uint8 ``(3, H, W)``."""
    top, left, h, w = (int(v) for v in box)
    t = torch.from_numpy(np.ascontiguousarray(image[top : top + h, left : left + w]))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    if t.shape[0] == 4:
        t = t[:3]  # drop alpha
    if tuple(t.shape[-2:]) != tuple(size):
        t = TF.resize(t, list(size), interpolation=InterpolationMode.BILINEAR, antialias=True)
    if flip:
        t = t.flip(-1)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)  # gray: replicate to 3 channels (gray=True in the loader keeps one)
    return t.contiguous()


class _CropDataset(Dataset):
    """Items are keyed by the crop record itself: ``(image id, top, left, h, w, flip)``."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __getitem__(self, key: tuple) -> torch.Tensor:
        i, top, left, h, w, flip, H, W = key
        return crop_resize_flip(self.source.get(i), (top, left, h, w), flip, (H, W))


class _BatchKeys(Sampler):
    """A batch sampler whose batches are replaced before each pass (persistent workers stay up)."""

    def __init__(self):
        self.batches: list[list[tuple]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TorchBackend:
    """PixelBackend over any image source (see ``loaders.images``), with ``num_workers`` processes.

    ``images`` is a uint8 array ``(N, H, W[, C])``, a list of arrays, an image folder path or a
    dataset of ``(image, label)``. ``labels`` (class ids) are kept for hard-label steps.
    """

    #: the pixel path, recorded in label files (loaders.contract)
    pixel_path = {"backend": "torch", "interpolation": "bilinear, antialiased (torchvision v2 resize)"}

    def __init__(
        self,
        images: Any,
        labels: Sequence[int] | None = None,
        *,
        num_workers: int = 0,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        pin_memory: bool = False,
    ):
        self.source = as_image_source(images, labels)
        self.num_images = self.source.num_images
        self.num_workers = int(num_workers)
        self._dataset = _CropDataset(self.source)
        self._keys = _BatchKeys()
        self._loader: DataLoader | None = None
        self._loader_kw = dict(
            num_workers=self.num_workers,
            persistent_workers=persistent_workers and self.num_workers > 0,
            prefetch_factor=prefetch_factor if self.num_workers > 0 else None,
            pin_memory=pin_memory,
        )

    @property
    def image_sizes(self) -> np.ndarray:
        return self.source.image_sizes

    @property
    def fingerprint(self) -> str:
        return self.source.fingerprint

    @property
    def labels(self) -> np.ndarray | None:
        return self.source.labels

    def iter_batches(self, batches: Sequence[CropBatch], size: tuple[int, int]) -> Iterator[torch.Tensor]:
        """Yield uint8 ``(n, 3, H, W)`` per CropBatch, in order (the PixelBackend contract)."""
        H, W = (int(s) for s in size)
        keys = [self._keys_of(cb, H, W) for cb in batches]
        if self.num_workers == 0:
            for ks in keys:
                yield torch.stack([self._dataset[k] for k in ks]) if ks else torch.empty(0, 3, H, W, dtype=torch.uint8)
            return
        if self._loader is None:
            self._loader = DataLoader(self._dataset, batch_sampler=self._keys, collate_fn=torch.stack, **self._loader_kw)
        self._keys.batches = keys
        yield from self._loader

    def _keys_of(self, cb: CropBatch, H: int, W: int) -> list[tuple]:
        idx, boxes, flips = check_crop_batch(cb, self.image_sizes)
        return [(int(i), *map(int, b), bool(f), H, W) for i, b, f in zip(idx, boxes, flips)]

    def close(self) -> None:
        """Stop the worker processes (they also stop when the backend is garbage-collected)."""
        self._loader = None
