"""FKD's per-image layout: ``<dir>/<class>/<image>.tar``, each ``[coords (N,4), flip (N,), label]``
(NumPy arrays, ``torch.save``d), ``label`` (N, 2, k) = [class indices; probabilities] of the k
most likely classes ("marginal smoothing": the rest of the mass spread evenly over the other
classes), or (N, 2) for plain smoothing (k = 1).

Mapping: image ids follow ImageFolder order (class folders sorted, then files sorted); crop
``e`` of every image becomes stored epoch ``e`` (FKD draws 4 of the N crops per image and step
at random; any epoch of the file can serve). Orders are the identity and the batch size is
chosen at pack time (FKD has no batches). Probabilities are at FKD's softmax temperature (1).

Memory: crops are gathered for a block of epochs at a time over all images, so each image
file is read ``ceil(N / block)`` times, the block sized to ``max_memory`` bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import LabelStoreError
from ..writer import logits_from_probs
from ._common import ImportedBatch, SourceInfo, SourceReader, coords_to_boxes, to_numpy, torch_load
from ._common import image_sizes_of


def detect(path: Path) -> str | None:
    if not path.is_dir():
        return None
    subdirs = sorted(p for p in path.iterdir() if p.is_dir())
    if subdirs and any(f.suffix == ".tar" and f.is_file() for f in subdirs[0].iterdir()) \
            and not subdirs[0].name.startswith("epoch_"):
        return "fkd"
    return None


class FKDReader(SourceReader):
    layout = "fkd"

    def __init__(self, path: Path, *, image_size=None, num_classes: int | None = None, batch_size: int = 256,
                 source_temperature: float = 1.0, allow_pickle: bool = False, max_memory: int = 1 << 30, log=print):
        self.root = Path(path)
        self.allow_pickle = allow_pickle
        self.skipped: list[str] = []
        classes = sorted(p for p in self.root.iterdir() if p.is_dir())
        self.files = [f for c in classes for f in sorted(c.iterdir()) if f.suffix == ".tar" and f.is_file()]
        if not self.files:
            raise LabelStoreError(f"{self.root} holds no <class>/<image>.tar files")
        N = len(self.files)
        C = int(num_classes or len(classes))
        coords, flips, idx, probs = self._read(self.files[0])
        self.crops, self.k = coords.shape[0], idx.shape[1]
        if image_size is None:
            raise LabelStoreError("FKD crops are relative to each image's size: pass --image-size (H W, or an .npy of (N, 2) sizes)")
        sizes = image_sizes_of(image_size, N)
        self._sizes = np.broadcast_to(np.asarray(sizes, np.int64), (N, 2)) if np.ndim(sizes) == 1 else np.asarray(sizes)
        self.T = float(source_temperature)
        self.info = SourceInfo("fkd", C, N, list(range(self.crops)), int(batch_size), source="probabilities",
                               source_temperature=self.T, image_sizes=sizes)
        per_record = 4 * 4 + 1 + self.k * 8
        self.block = max(1, min(self.crops, int(max_memory // max(1, N * per_record))))
        self._cache: tuple[int, tuple] | None = None
        self.info.attrs.update({"source_layout": "fkd", "source_dir": str(self.root.resolve()),
                                "order_source": "identity (FKD: image ids in ImageFolder order; epoch e = crop e)"})
        self.info.notes.append(f"{N} images x {self.crops} crops; top-{self.k} labels; each file read "
                               f"{-(-self.crops // self.block)} time(s)")

    def _read(self, path: Path):
        obj = torch_load(self.root, path, self.allow_pickle)
        if not isinstance(obj, (list, tuple)) or len(obj) != 3:
            raise LabelStoreError(f"{path}: expected FKD's list [coords, flip, label]")
        coords = to_numpy(obj[0], "coords", path).astype(np.float32)
        flips = to_numpy(obj[1], "flip", path).astype(bool).reshape(-1)
        label = to_numpy(obj[2], "label", path)
        if label.ndim == 2 and label.shape[1] == 2:  # 'smoothing': [index, value] per crop
            label = label[:, :, None]
        if label.ndim != 3 or label.shape[1] != 2 or coords.ndim != 2 or coords.shape[1] != 4 \
                or not (len(coords) == len(flips) == len(label)):
            raise LabelStoreError(f"{path}: expected coords (N,4), flip (N,) and label (N,2,k); got "
                                  f"{coords.shape}, {flips.shape}, {label.shape}")
        fidx = label[:, 0, :].astype(np.float64)
        idx = np.rint(fidx).astype(np.int64)
        if (np.abs(fidx - idx) > 1e-3).any() or (idx < 0).any():
            raise LabelStoreError(f"{path}: class indices are not whole numbers (fp16 indices are exact only below 2048 classes)")
        return coords, flips, idx, label[:, 1, :].astype(np.float64)

    def _block(self, epoch: int):
        start = (epoch // self.block) * self.block
        if self._cache is not None and self._cache[0] == start:
            return start, self._cache[1]
        stop = min(start + self.block, self.crops)
        N, k = self.info.num_images, self.k
        coords = np.empty((stop - start, N, 4), np.float32)
        flips = np.empty((stop - start, N), bool)
        idx = np.empty((stop - start, N, k), np.int64)
        probs = np.empty((stop - start, N, k), np.float64)
        for i, f in enumerate(self.files):
            c, fl, ix, pr = self._read(f)
            if c.shape[0] != self.crops or ix.shape[1] != k:
                raise LabelStoreError(f"{f} holds {c.shape[0]} crops of top-{ix.shape[1]} labels; "
                                      f"{self.files[0]} holds {self.crops} of top-{k}: mixed runs")
            if ix.max(initial=0) >= self.info.num_classes:
                raise LabelStoreError(f"{f}: class index {int(ix.max())} >= {self.info.num_classes} classes (--num-classes)")
            coords[:, i], flips[:, i], idx[:, i], probs[:, i] = c[start:stop], fl[start:stop], ix[start:stop], pr[start:stop]
        self._cache = (start, (coords, flips, idx, probs))
        return start, self._cache[1]

    def order(self, epoch: int) -> np.ndarray:
        return np.arange(self.info.num_images, dtype=np.int64)

    def read_batch(self, epoch: int, batch: int) -> ImportedBatch:
        start, (coords, flips, idx, probs) = self._block(epoch)
        B, N, C = self.info.batch_size, self.info.num_images, self.info.num_classes
        sl = slice(batch * B, min((batch + 1) * B, N))
        e = epoch - start
        ix, pr = idx[e, sl], probs[e, sl]
        n = ix.shape[0]
        rest = np.clip(1.0 - pr.sum(axis=1, keepdims=True), 0.0, None) / max(C - ix.shape[1], 1)
        full = np.repeat(rest, C, axis=1)
        full[np.arange(n)[:, None], ix] = pr
        boxes = coords_to_boxes(coords[e, sl], self._sizes[sl])
        sizes = self._sizes[sl]
        if (boxes[:, 2:] < 1).any() or (boxes[:, :2] + boxes[:, 2:] > sizes).any():
            raise LabelStoreError(f"crop coordinates of epoch {epoch} batch {batch} fall outside the images at --image-size")
        return ImportedBatch(epoch, batch, logits_from_probs(full, self.T), boxes, flips[e, sl].copy(), None)

    def iter_epoch(self, epoch: int, skip=frozenset()) -> Iterator[ImportedBatch]:
        for b in range(self.info.num_batches):
            if b not in skip:
                yield self.read_batch(epoch, b)
