"""SRe2L's per-batch layout, shared by LPLD and CV-DD: ``<dir>/epoch_<e>/batch_<b>.tar``.

Each file is a ``torch.save``d list ``[coords (B,4) float32, flip (B,) bool, mix_index (B,)
int64, mix_lam float, mix_bbox 4 ints, logits (B,C) fp16]`` (the three mix fields are None
without ``--mix-type``). LPLD adds ``sampler_indices_epoch.json`` with each epoch's order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import LabelStoreError
from . import orders as _orders
from ._common import (
    ImportedBatch, SourceInfo, SourceReader, check_batch_shape, coords_to_boxes, sre2l_mix, to_numpy, torch_load,
)

EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
BATCH_FILE = re.compile(r"^batch_(\d+)\.tar$")
LPLD_ORDERS = "sampler_indices_epoch.json"


def detect(path: Path) -> str | None:
    """'lpld' or 'sre2l' when ``path`` holds ``epoch_<e>/`` folders of ``batch_<b>.tar``."""
    if not path.is_dir():
        return None
    dirs = [p for p in path.iterdir() if p.is_dir() and EPOCH_DIR.match(p.name)]
    if not dirs or not any(BATCH_FILE.match(f.name) for f in dirs[0].iterdir()):
        return None
    return "lpld" if (path / LPLD_ORDERS).is_file() else "sre2l"


class SRe2LReader(SourceReader):
    """Reads SRe2L / LPLD / CV-DD label folders batch by batch (one small file at a time)."""

    def __init__(self, path: Path, *, layout: str = "sre2l", image_size=224, order: str = "auto",
                 order_from: Path | None = None, skip_bad: bool = False, allow_pickle: bool = False,
                 log=print):
        self.layout = layout
        self.root = Path(path)
        self.allow_pickle = allow_pickle
        self.skipped: list[str] = []
        self._files = self._scan(skip_bad)
        epochs = sorted(self._files)
        first = self._files[epochs[0]]
        head = self._load(first[0])
        nb = len(first)
        B = self._fields(head, first[0])[5].shape[0]
        last = self._fields(self._load(first[-1]), first[-1])[5] if nb > 1 else self._fields(head, first[0])[5]
        C = last.shape[1]
        N = B * (nb - 1) + last.shape[0]
        mix_kind = "none" if head[2] is None else ("mixup" if head[4] is None else "cutmix")
        sizes = _image_sizes(image_size, N)
        self.info = SourceInfo(layout, C, N, epochs, B, mix_kind=mix_kind, image_sizes=sizes)
        self._sizes = np.broadcast_to(np.asarray(sizes, np.int64), (N, 2)) if np.ndim(sizes) == 1 else np.asarray(sizes)
        self._orders, how = self._make_orders(order, order_from, N, epochs)
        self.info.attrs.update({"source_layout": layout, "source_dir": str(self.root.resolve()), "order_source": how})
        self.info.notes.append(f"sample order: {how}")

    # -- scanning -----------------------------------------------------------------------
    def _scan(self, skip_bad: bool) -> dict[int, list[Path]]:
        files: dict[int, list[Path]] = {}
        for d in self.root.iterdir():
            m = EPOCH_DIR.match(d.name)
            if not (m and d.is_dir()):
                continue
            found = {int(mb.group(1)): f for f in d.iterdir() if (mb := BATCH_FILE.match(f.name))}
            n = max(found) + 1 if found else 0
            if not found or sorted(found) != list(range(n)):
                missing = sorted(set(range(n)) - set(found))[:5] or ["all"]
                self._bad(f"{d}: batch files missing ({', '.join(map(str, missing))}); an epoch needs batch_0..batch_{max(n - 1, 0)}", skip_bad)
                continue
            files[int(m.group(1))] = [found[b] for b in range(n)]
        if not files:
            raise LabelStoreError(f"{self.root} holds no readable epoch_<e>/batch_<b>.tar folders")
        counts = {e: len(v) for e, v in files.items()}
        common = max(set(counts.values()), key=list(counts.values()).count)
        for e in sorted(files):
            if counts[e] != common:
                self._bad(f"{self.root / f'epoch_{e}'} has {counts[e]} batch files, the other epochs {common}", skip_bad)
                del files[e]
        epochs = sorted(files)
        gaps = sorted(set(range(epochs[-1] + 1)) - set(epochs))
        if gaps and not skip_bad:
            raise LabelStoreError(f"{self.root}: epoch folders missing: {', '.join(f'epoch_{g}' for g in gaps[:5])}; "
                                  "pass --skip-bad to pack the epochs present")
        return files

    def _bad(self, msg: str, skip_bad: bool) -> None:
        if not skip_bad:
            raise LabelStoreError(msg + " (pass --skip-bad to leave such epochs out)")
        self.skipped.append(msg)

    def _make_orders(self, order, order_from, N, epochs):
        lpld_json = self.root / LPLD_ORDERS
        if order_from is not None:
            return _orders.load_orders(order_from, N, epochs), f"read from {order_from}"
        if order == "auto" and lpld_json.is_file():
            return _orders.load_orders(lpld_json, N, epochs, self.root), f"read from {LPLD_ORDERS} (LPLD)"
        if order == "auto" and self.layout == "lpld":
            raise LabelStoreError(f"{self.root}: LPLD folders carry {LPLD_ORDERS}; it is missing (pass --order-from FILE)")
        if order in ("auto", "sre2l-seed42"):
            return _orders.sre2l_orders(N, epochs), "re-created: RandomSampler(generator seeded 42), epochs drawn in sequence from 0 (SRe2L)"
        if order == "hald-seed42":
            return _orders.hald_orders(N, epochs), "re-created: randperm(generator seeded 42 + epoch) (HALD)"
        if order == "identity":
            return _orders.identity_orders(N, epochs), "identity (position = image id): replay pairs crops with the wrong images unless the relabel run was unshuffled"
        raise LabelStoreError(f"unknown --order {order!r}; choose from {', '.join(_orders.ORDER_CHOICES)}")

    # -- reading ------------------------------------------------------------------------
    def _load(self, path: Path):
        return torch_load(self.root, path, self.allow_pickle)

    def _fields(self, obj, path: Path):
        if not isinstance(obj, (list, tuple)) or len(obj) != 6:
            raise LabelStoreError(
                f"{path}: expected SRe2L's list [coords, flip, mix_index, mix_lam, mix_bbox, logits], "
                f"got {type(obj).__name__}{f' of {len(obj)}' if isinstance(obj, (list, tuple)) else ''}; "
                "is this another layout? (see --from)"
            )
        logits = to_numpy(obj[5], "logits", path)
        if logits.ndim != 2:
            raise LabelStoreError(f"{path}: logits must be (B, C), got shape {logits.shape}")
        return list(obj[:5]) + [logits]

    def order(self, epoch: int) -> np.ndarray:
        return self._orders[epoch]

    def read_batch(self, epoch: int, batch: int) -> ImportedBatch:
        path = self._files[epoch][batch]
        coords, flip, mix_index, mix_lam, mix_bbox, logits = self._fields(self._load(path), path)
        return self.convert(epoch, batch, path, coords, flip, mix_index, mix_lam, mix_bbox, logits)

    def convert(self, epoch, batch, path, coords, flip, mix_index, mix_lam, mix_bbox, logits) -> ImportedBatch:
        info = self.info
        B = info.batch_size
        n = min(B, info.num_images - batch * B)
        check_batch_shape(logits, n, info.num_classes, path)
        coords = to_numpy(coords, "coords", path)
        flips = to_numpy(flip, "flip", path).astype(bool).reshape(-1)
        if coords.shape != (n, 4) or flips.shape != (n,):
            raise LabelStoreError(f"{path}: coords must be ({n}, 4) and flip ({n},), got {coords.shape} and {flips.shape}")
        ids = self._orders[epoch][batch * B : batch * B + n]
        sizes = self._sizes[ids]
        boxes = coords_to_boxes(coords, sizes)
        if (boxes[:, 2:] < 1).any() or (boxes[:, :2] < 0).any() or (boxes[:, :2] + boxes[:, 2:] > sizes).any():
            raise LabelStoreError(f"{path}: crop coordinates fall outside the image at --image-size "
                                  f"{self.info.image_sizes if np.ndim(self.info.image_sizes) == 1 else '(per image)'}; "
                                  "give the size the images had when they were relabelled")
        mix = sre2l_mix(mix_index, mix_lam, mix_bbox, n, path)
        if mix is not None and info.mix_kind == "none":
            raise LabelStoreError(f"{path} is mixed but the first batch was not; the files come from different runs")
        return ImportedBatch(epoch, batch, np.asarray(logits, np.float32), boxes, flips, mix)


def _image_sizes(image_size, N):
    """``--image-size``: an int, (H, W), or an (N, 2) array of per-image sizes."""
    arr = np.asarray(image_size, dtype=np.int64)
    if arr.ndim == 0:
        arr = np.array([int(arr), int(arr)])
    if arr.shape == (2,):
        return tuple(int(v) for v in arr)
    if arr.shape != (N, 2):
        raise LabelStoreError(f"per-image sizes must be an array ({N}, 2), got {arr.shape}")
    return arr
