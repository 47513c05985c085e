"""Plain arrays of teacher outputs: one ``.npz``, ``.npy``, ``.h5``/``.hdf5`` or ``.pt`` file.

Keys (datasets in HDF5, entries of a dict in ``.pt``; an ``.npy`` is the ``logits`` alone):

- ``logits`` (E, N, C) or (N, C) — or ``probs`` with a scalar ``temperature``;
  ``logits[e, p]`` is the record at *position* p of epoch e;
- ``order`` (E, N) ints, the image id at each position (default: the identity);
- ``boxes`` (E, N, 4) pixel ``(top, left, height, width)``, or ``coords`` (E, N, 4) in SRe2L's
  normalised form, with ``flips`` (E, N); without either, every crop is the whole image;
- ``batch_size`` (scalar, default ``--batch-size``).

``.npy`` and HDF5 are read lazily, one batch at a time; ``.npz`` and ``.pt`` are loaded
whole (use HDF5 or ``.npy`` for inputs larger than memory).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LabelStoreError
from ..writer import logits_from_probs
from ._common import ImportedBatch, SourceInfo, SourceReader, coords_to_boxes, to_numpy, torch_load
from ._common import image_sizes_of

SUFFIXES = (".npz", ".npy", ".h5", ".hdf5", ".pt", ".pth")


def detect(path: Path) -> str | None:
    return "arrays" if path.is_file() and path.suffix.lower() in SUFFIXES else None


class ArraysReader(SourceReader):
    layout = "arrays"

    def __init__(self, path: Path, *, image_size=224, batch_size: int | None = None, allow_pickle: bool = False, log=print):
        self.root = Path(path)
        self.skipped: list[str] = []
        self.arrays = self._open(self.root, allow_pickle)
        a = self.arrays
        if "logits" in a:
            self.key, source, T = "logits", "logits", None
        elif "probs" in a and "temperature" in a:
            self.key, source, T = "probs", "probabilities", float(np.asarray(a["temperature"]))
        else:
            raise LabelStoreError(f"{path}: needs a 'logits' array (E, N, C) or 'probs' with 'temperature'; found {sorted(a)}")
        shape = a[self.key].shape
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3:
            raise LabelStoreError(f"{path}: {self.key} must be (E, N, C) or (N, C), got {a[self.key].shape}")
        E, N, C = shape
        bs = int(np.asarray(a["batch_size"])) if "batch_size" in a else int(batch_size or N)
        for k, want in (("order", (E, N)), ("boxes", (E, N, 4)), ("coords", (E, N, 4)), ("flips", (E, N))):
            if k in a and tuple(a[k].shape) != want and not (len(a[self.key].shape) == 2 and tuple(a[k].shape) == want[1:]):
                raise LabelStoreError(f"{path}: {k} must have shape {want}, got {a[k].shape}")
        sizes = image_sizes_of(image_size if image_size is not None else 224, N)
        self._sizes = np.broadcast_to(np.asarray(sizes, np.int64), (N, 2)) if np.ndim(sizes) == 1 else np.asarray(sizes)
        self.has_crops = "boxes" in a or "coords" in a
        self.info = SourceInfo("arrays", C, N, list(range(E)), bs, source=source, source_temperature=T, image_sizes=sizes)
        self.info.attrs.update({"source_layout": "arrays", "source_file": str(self.root.resolve()),
                                "order_source": "from the file's 'order'" if "order" in a else "identity"})
        if not self.has_crops:
            self.info.notes.append("no boxes/coords: every record is the whole image (crops 'full', zero bytes)")

    @staticmethod
    def _open(path: Path, allow_pickle: bool) -> dict:
        sfx = path.suffix.lower()
        try:
            if sfx == ".npy":
                return {"logits": np.load(path, mmap_mode="r", allow_pickle=False)}
            if sfx == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}
            if sfx in (".h5", ".hdf5"):
                import h5py

                f = h5py.File(path, "r")
                return {k: f[k] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
            obj = torch_load(path.parent, path, allow_pickle)
            if not isinstance(obj, dict):
                raise LabelStoreError(f"{path}: a .pt source must hold a dict of tensors, got {type(obj).__name__}")
            return {k: to_numpy(v, k, path) for k, v in obj.items()}
        except LabelStoreError:
            raise
        except Exception as exc:
            raise LabelStoreError(f"cannot read {path} ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None

    def order(self, epoch: int) -> np.ndarray:
        if "order" not in self.arrays:
            return np.arange(self.info.num_images, dtype=np.int64)
        o = self.arrays["order"]
        return np.asarray(o[epoch] if len(o.shape) == 2 else o, dtype=np.int64)

    def _slice(self, key: str, epoch: int, sl: slice, per_epoch_ndim: int) -> np.ndarray:
        arr = self.arrays[key]
        return np.asarray(arr[epoch, sl] if len(arr.shape) == per_epoch_ndim + 1 else arr[sl])

    def read_batch(self, epoch: int, batch: int) -> ImportedBatch:
        info = self.info
        B, N = info.batch_size, info.num_images
        sl = slice(batch * B, min((batch + 1) * B, N))
        z = self._slice(self.key, epoch, sl, 2).astype(np.float32)
        if self.key == "probs":
            z = logits_from_probs(z, info.source_temperature)
        ids = self.order(epoch)[sl]
        sizes = self._sizes[ids]
        if "boxes" in self.arrays:
            boxes = self._slice("boxes", epoch, sl, 2).astype(np.int64)
        elif "coords" in self.arrays:
            boxes = coords_to_boxes(self._slice("coords", epoch, sl, 2), sizes)
        else:
            boxes = np.concatenate([np.zeros((len(ids), 2), np.int64), sizes], axis=1)
        flips = self._slice("flips", epoch, sl, 1).astype(bool) if "flips" in self.arrays else np.zeros(len(ids), bool)
        if (boxes[:, 2:] < 1).any() or (boxes[:, :2] < 0).any() or (boxes[:, :2] + boxes[:, 2:] > sizes).any():
            raise LabelStoreError(f"{self.root}: epoch {epoch} batch {batch} has crop boxes outside the images (check --image-size)")
        return ImportedBatch(epoch, batch, z, boxes, flips, None)
