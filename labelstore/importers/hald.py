"""HALD's per-epoch layout: ``<dir>/epoch_<e>.tar``, each a ``torch.save``d list of per-batch
lists ``[coords.half(), flip, mix_index, lam, bbox, softmax(out / T).half()]``.

The labels are probabilities at T (20 by default), stored as ``source='probabilities'``
with logits ``T * log(p)`` (exact up to a per-record shift, see ``logits_from_probs``).
Orders come from ``sampler_indices_dict.pt`` beside the epochs when present, else from
HALD's ``randperm(N, seed 42 + epoch)``. One epoch file is held in memory at a time.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import LabelStoreError
from ..writer import logits_from_probs
from . import orders as _orders
from ._common import ImportedBatch, SourceInfo, torch_load
from ._common import image_sizes_of
from .sre2l import SRe2LReader

EPOCH_FILE = re.compile(r"^epoch_(\d+)\.tar$")
HALD_ORDERS = "sampler_indices_dict.pt"


def detect(path: Path) -> str | None:
    if path.is_dir() and any(EPOCH_FILE.match(p.name) and p.is_file() for p in path.iterdir()):
        return "hald"
    return None


class HALDReader(SRe2LReader):
    """Reads HALD label folders one epoch file at a time."""

    def __init__(self, path: Path, *, image_size=224, order: str = "auto", order_from: Path | None = None,
                 source_temperature: float = 20.0, skip_bad: bool = False, allow_pickle: bool = False,
                 num_images: int | None = None, log=print):
        self.layout = "hald"
        self.root = Path(path)
        self.allow_pickle = allow_pickle
        self.skip_bad = skip_bad
        self.skipped: list[str] = []
        self.T = float(source_temperature)
        self._cache: tuple[int, list] | None = None
        self._paths = {int(m.group(1)): p for p in self.root.iterdir() if (m := EPOCH_FILE.match(p.name)) and p.is_file()}
        if not self._paths:
            raise LabelStoreError(f"{self.root} holds no epoch_<e>.tar files")
        epochs = sorted(self._paths)
        gaps = sorted(set(range(epochs[-1] + 1)) - set(epochs))
        if gaps:
            self._bad(f"{self.root}: epoch files missing: {', '.join(f'epoch_{g}.tar' for g in gaps[:5])}",
                      what="pack the epochs present")
        first, batches = self._probe_epoch(epochs)
        epochs = [e for e in epochs if e >= first]
        B = self._fields(batches[0], self._paths[first])[5].shape[0]
        last = self._fields(batches[-1], self._paths[first])[5]
        C = last.shape[1]
        head = batches[0]
        mix_kind = "none" if head[2] is None else ("mixup" if head[4] is None else "cutmix")
        # one file is one whole epoch, written at once: its batches give the image count, unless
        # the user or an order file says otherwise (then they must agree)
        order_file = self._order_file(order, order_from)
        N, how_n = B * (len(batches) - 1) + last.shape[0], f"the batches of {self._paths[first].name}"
        given = self._given_count(num_images, order_file)
        if given is not None:
            N_given, how_n = given
            if -(-N_given // B) != len(batches) or last.shape[0] != N_given - B * (len(batches) - 1):
                raise LabelStoreError(f"{self._paths[first]} holds {len(batches)} batches for {N} images, but {how_n} "
                                      f"says {N_given} images; pair the labels with their own image set or order file")
            N = N_given
        sizes = image_sizes_of(image_size, N)
        self._nb = len(batches)
        self.present = None
        self.info = SourceInfo("hald", C, N, epochs, B, source="probabilities", source_temperature=self.T,
                               mix_kind=mix_kind, image_sizes=sizes)
        self.info.notes.append(f"image count {N}: {how_n}")
        self._sizes = np.broadcast_to(np.asarray(sizes, np.int64), (N, 2)) if np.ndim(sizes) == 1 else np.asarray(sizes)
        if order_from is None and order == "auto" and (self.root / HALD_ORDERS).is_file():
            self._orders = _orders.load_orders(self.root / HALD_ORDERS, N, epochs, self.root)
            how = f"read from {HALD_ORDERS} (HALD)"
        else:
            self._orders, how = self._make_orders("hald-seed42" if order == "auto" else order,
                                                  Path(order_from) if order_from else None, N, epochs)
        self.info.attrs.update({"source_layout": "hald", "source_dir": str(self.root.resolve()), "order_source": how})
        self.info.notes.append(f"sample order: {how}")
        self.info.notes.append(f"labels are probabilities at T={self.T:g}, stored as logits T*log(p)")

    def _order_file(self, order: str, order_from: Path | None) -> Path | None:
        if order_from is not None:
            return Path(order_from)
        own = self.root / HALD_ORDERS
        return own if order == "auto" and own.is_file() else None

    def _probe_epoch(self, epochs: list[int]) -> tuple[int, list]:
        """The first readable epoch file (a bad one is skipped under skip_bad, like any other)."""
        for e in epochs:
            try:
                batches = self._epoch(e)
                self._fields(batches[0], self._paths[e])
                return e, batches
            except LabelStoreError as exc:
                if not self.skip_bad:
                    raise
                self.skipped.append(f"epoch {e} left out: {exc}")
        raise LabelStoreError(f"{self.root}: no epoch file is readable ({'; '.join(self.skipped[:2])})")

    def check_epoch(self, epoch: int) -> tuple[list[int], list[str]]:
        try:
            self._epoch(epoch)
        except LabelStoreError as exc:
            return [], [f"epoch {epoch} left out: {exc}"]
        return super().check_epoch(epoch)

    def _epoch(self, epoch: int) -> list:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        path = self._paths[epoch]
        obj = torch_load(self.root, path, self.allow_pickle)
        if not isinstance(obj, (list, tuple)) or not obj:
            raise LabelStoreError(f"{path}: expected HALD's list of per-batch lists, got {type(obj).__name__}")
        self._cache = (epoch, list(obj))
        return self._cache[1]

    def read_batch(self, epoch: int, batch: int) -> ImportedBatch:
        batches = self._epoch(epoch)
        path = self._paths[epoch]
        if len(batches) != self._nb:
            raise LabelStoreError(f"{path} holds {len(batches)} batches, epoch {self.info.epochs[0]} holds {self._nb}")
        coords, flip, mix_index, lam, bbox, probs = self._fields(batches[batch], path)
        if not np.isfinite(probs).all() or (probs < 0).any():
            raise LabelStoreError(f"{path} batch {batch}: probabilities must be finite and non-negative")
        logits = logits_from_probs(probs.astype(np.float32), self.T)
        return self.convert(epoch, batch, Path(f"{path}[batch {batch}]"), coords, flip, mix_index, lam, bbox, logits)

    def iter_epoch(self, epoch: int, skip=frozenset()) -> Iterator[ImportedBatch]:
        for b in self.stored_batches(epoch):
            if b not in skip:
                yield self.read_batch(epoch, b)
