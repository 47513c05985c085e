"""What every importer shares: the batch record it yields, the reader base class, safe
pickle loading, and the SRe2L coordinate and CutMix-box conversions.

Trust: ``torch.load`` of a pickle can execute code. Importers load only files inside the
source directory the user named (symlinks resolved), with ``weights_only=True`` (tensors,
numbers, lists, dicts and NumPy scalars only). ``allow_pickle=True`` (``--trust-pickles``)
falls back to a full unpickle for files written with other objects inside: use it only on
files you made yourself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..crops import Mix
from ..errors import LabelStoreError


@dataclass
class ImportedBatch:
    """One source batch, in labelstore terms: logits, pixel boxes, flips and the batch's mix."""

    epoch: int  # the *source* epoch
    batch: int
    logits: np.ndarray  # (n, C) float32
    boxes: np.ndarray  # (n, 4) int (top, left, height, width) in source pixels
    flips: np.ndarray  # (n,) bool
    mix: Mix | None


@dataclass
class SourceInfo:
    """The shape of a source label set, found by a cheap scan (few files opened)."""

    layout: str
    num_classes: int
    num_images: int
    epochs: list[int]  # source epochs present, ascending
    batch_size: int
    source: str = "logits"
    source_temperature: float | None = None
    mix_kind: str = "none"
    image_sizes: Any = None  # (H, W) or (N, 2)
    notes: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    @property
    def num_batches(self) -> int:
        return -(-self.num_images // self.batch_size)


class SourceReader:
    """Base class of the importers: ``info`` from a scan, then batches on demand."""

    layout = ""
    info: SourceInfo

    def order(self, epoch: int) -> np.ndarray:
        """The image ids of source epoch ``epoch`` by position."""
        raise NotImplementedError

    def read_batch(self, epoch: int, batch: int) -> ImportedBatch:
        raise NotImplementedError

    skipped: list[str]
    present: dict[int, list[int]] | None = None  # batches each epoch holds, when not all of them

    def stored_batches(self, epoch: int) -> list[int]:
        """The batches of source epoch ``epoch`` the source holds (all, unless it is partial)."""
        if self.present is not None and epoch in self.present:
            return list(self.present[epoch])
        return list(range(self.info.num_batches))

    def iter_epoch(self, epoch: int, skip: set[int] = frozenset()) -> Iterator[ImportedBatch]:
        """Every stored batch of ``epoch`` not in ``skip``, in order. Subclasses that store whole
        epochs in one file override it to load that file once."""
        for b in self.stored_batches(epoch):
            if b not in skip:
                yield self.read_batch(epoch, b)

    def check_epoch(self, epoch: int) -> tuple[list[int], list[str]]:
        """Read every stored batch of ``epoch`` and check it, keeping nothing (``--skip-bad``):
        (the batches that read cleanly, a message per batch that did not)."""
        good, bad = [], []
        for b in self.stored_batches(epoch):
            try:
                self.read_batch(epoch, b)
                good.append(b)
            except LabelStoreError as exc:
                bad.append(f"epoch {epoch} batch {b} left out: {exc}")
        return good, bad

    def sample_logits(self, max_records: int, epochs: list[int] | None = None) -> np.ndarray:
        """A bounded sample of logits for fitting codecs and measuring fidelity: whole batches
        taken evenly across epochs and positions (deterministic, so a resumed pack picks the same)."""
        info = self.info
        per = max(1, min(info.batch_size, max_records))
        want = max(1, max_records // per)
        slots = [(e, b) for e in (info.epochs if epochs is None else epochs) for b in self.stored_batches(e)]
        picks = [slots[i] for i in np.unique(np.linspace(0, len(slots) - 1, min(want, len(slots))).astype(int))]
        out, total = [], 0
        for e, b in picks:
            z = self.read_batch(e, b).logits
            out.append(z[: max_records - total])
            total += len(out[-1])
            if total >= max_records:
                break
        return np.concatenate(out)


def inside(root: Path, path: Path) -> Path:
    """``path`` resolved, refusing anything (a symlink included) that leads outside ``root``."""
    real = path.resolve()
    base = root.resolve()
    if real != base and base not in real.parents:
        raise LabelStoreError(
            f"{path} resolves to {real}, outside the source directory {base}; refusing to load it "
            "(loading a pickle can run code). Copy the file into the source tree if you trust it"
        )
    return real


_NUMPY_SAFE = None


def _numpy_safe_globals() -> list:
    """NumPy scalar types SRe2L's lists hold (``np.clip`` returns np.int64 for the CutMix box)."""
    global _NUMPY_SAFE
    if _NUMPY_SAFE is None:
        core = getattr(np, "_core", None) or np.core
        types = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
        dtypes = getattr(np, "dtypes", None)
        if dtypes is not None:
            types += [getattr(dtypes, n) for n in ("Int64DType", "Int32DType", "Float64DType", "Float32DType",
                                                   "Float16DType", "BoolDType", "UInt8DType", "Int16DType") if hasattr(dtypes, n)]
        _NUMPY_SAFE = types
    return _NUMPY_SAFE


def torch_load(root: Path, path: Path, allow_pickle: bool = False) -> Any:
    """Load a ``torch.save`` file from inside ``root``, as safely as the layout allows."""
    real = inside(root, path)
    try:
        import torch
    except ImportError:
        raise LabelStoreError(
            f"reading {path} needs torch (the file is a torch.save pickle): pip install torch, "
            "or export the labels to arrays (npz/h5) and pack those"
        ) from None
    try:
        if allow_pickle:
            return torch.load(real, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(real, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LabelStoreError(f"{path} is missing") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on bad files
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        hint = ("; if it is intact but holds other Python objects and you made it yourself, pass --trust-pickles"
                if "weights only" in str(exc).lower() or "weights_only" in str(exc) else "")
        raise LabelStoreError(f"cannot read {path}: not a readable torch.save file ({msg}){hint}") from None


def to_numpy(x: Any, what: str, path: Path) -> np.ndarray:
    """A tensor (or array, or list) as a NumPy array, with a clear error otherwise."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except Exception:
        raise LabelStoreError(f"{path}: field {what} is a {type(x).__name__}, expected an array") from None


def coords_to_boxes(coords: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """SRe2L/FKD normalised crop coordinates -> pixel boxes, exactly as their replay applies them.

    ``coords`` rows are ``(i/H, j/W, h/H, w/W)``. Replay (``RandomResizedCropWithCoords``) does
    ``i = coords[0] * H`` etc. in Python floats and hands the floats to
    ``torchvision.transforms.functional.resized_crop`` on a PIL image, which crops the box
    ``(j, i, j + w, i + h)``; PIL rounds each corner with Python's ``round`` (half to even).
    So: top = round(i*H), left = round(j*W), bottom = round(i*H + h*H), right = round(j*W + w*W),
    computed here in float64 from the stored float32 (or fp16) values, as Python does.
    """
    c = np.asarray(coords).astype(np.float64)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    H, W = sizes[:, 0], sizes[:, 1]
    i, j, h, w = c[:, 0] * H, c[:, 1] * W, c[:, 2] * H, c[:, 3] * W
    top, left = np.rint(i), np.rint(j)
    bottom, right = np.rint(i + h), np.rint(j + w)
    return np.stack([top, left, bottom - top, right - left], axis=1).astype(np.int64)


def boxes_to_coords(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Pixel boxes -> SRe2L coordinates (float32) that ``coords_to_boxes`` maps back exactly."""
    b = np.asarray(boxes, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    H, W = sizes[:, 0], sizes[:, 1]
    return np.stack([b[:, 0] / H, b[:, 1] / W, b[:, 2] / H, b[:, 3] / W], axis=1).astype(np.float32)


def sre2l_mix(mix_index: Any, mix_lam: Any, mix_bbox: Any, n: int, path: Path) -> Mix | None:
    """SRe2L's (mix_index, mix_lam, mix_bbox) -> a labelstore Mix.

    SRe2L's ``rand_bbox`` names its box ``(bbx1, bby1, bbx2, bby2)`` but reads ``W = size[2]``,
    the *height* axis of an NCHW batch, and pastes ``images[:, :, bbx1:bbx2, bby1:bby2]``: bbx
    runs along rows and bby along columns. In labelstore's ``(y0, x0, y1, x1)`` the box is
    therefore ``(bbx1, bby1, bbx2, bby2)``, in the same order. ``lam`` is SRe2L's Beta draw as
    stored (not re-adjusted to the box area). A mixup batch (no box) gets kind ``"mixup"``.
    """
    if mix_index is None:
        return None
    partner = to_numpy(mix_index, "mix_index", path).astype(np.int64).reshape(-1)
    if partner.shape != (n,) or (partner < 0).any() or (partner >= n).any():
        raise LabelStoreError(f"{path}: mix_index must be a permutation of the batch's {n} positions")
    try:
        lam = float(mix_lam)
    except (TypeError, ValueError):
        raise LabelStoreError(f"{path}: mix_lam must be a number, got {type(mix_lam).__name__}") from None
    if mix_bbox is None:
        return Mix("mixup", partner, lam)
    try:
        box = np.array([int(v) for v in (mix_bbox.tolist() if hasattr(mix_bbox, "tolist") else mix_bbox)], np.int32)
    except (TypeError, ValueError):
        raise LabelStoreError(f"{path}: mix_bbox must be 4 integers, got {mix_bbox!r}") from None
    if box.shape != (4,):
        raise LabelStoreError(f"{path}: mix_bbox must be 4 integers, got {len(box)}")
    return Mix("cutmix", partner, lam, box)


def check_batch_shape(logits: np.ndarray, n: int, num_classes: int, path: Path) -> None:
    if logits.ndim != 2 or logits.shape[0] != n:
        raise LabelStoreError(
            f"{path}: holds {logits.shape[0] if logits.ndim else '?'} records, expected {n} "
            "(batch sizes must match across files: every batch but an epoch's last has the batch size)"
        )
    if logits.shape[1] != num_classes:
        raise LabelStoreError(
            f"{path}: has {logits.shape[1]} classes but the set has {num_classes}; the files come "
            "from different teachers or data sets"
        )


def image_sizes_of(image_size, N):
    """``--image-size``: an int, (H, W), or an (N, 2) array of per-image sizes."""
    arr = np.asarray(image_size, dtype=np.int64)
    if arr.ndim == 0:
        arr = np.array([int(arr), int(arr)])
    if arr.shape == (2,):
        return tuple(int(v) for v in arr)
    if arr.shape != (N, 2):
        raise LabelStoreError(f"per-image sizes must be an array ({N}, 2), got {arr.shape}")
    return arr
