"""SRe2L's per-batch layout, shared by LPLD and CV-DD: ``<dir>/epoch_<e>/batch_<b>.tar``.

Each file is a ``torch.save``d list ``[coords (B,4) float32, flip (B,) bool, mix_index (B,)
int64, mix_lam float, mix_bbox 4 ints, logits (B,C) fp16]`` (the three mix fields are None
without ``--mix-type``). LPLD adds ``sampler_indices_epoch.json`` with each epoch's order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import LabelStoreError, describe_ranges
from . import orders as _orders
from ._common import (
    image_sizes_of,
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
    """Reads SRe2L / LPLD / CV-DD label folders batch by batch (one small file at a time).

    The image count is never guessed from files that may be missing: it comes from
    ``num_images`` (``--num-images`` / ``--images``), a complete order file, or a short batch
    (only an epoch's last batch may hold fewer than the batch size, so it proves where the
    epoch ends). A last kept epoch that holds only its first batches is an LPLD label pool and
    is stored as a partial epoch; any other missing or unreadable batch is an error, or, with
    ``skip_bad``, left out and reported (the image count never changes).
    """

    _pool_note: str | None = None  # set by _presence when the last epoch is an LPLD pool's partial one

    def __init__(self, path: Path, *, layout: str = "sre2l", image_size=224, order: str = "auto",
                 order_from: Path | None = None, skip_bad: bool = False, allow_pickle: bool = False,
                 num_images: int | None = None, log=print):
        self.layout = layout
        self.root = Path(path)
        self.allow_pickle = allow_pickle
        self.skip_bad = skip_bad
        self.skipped: list[str] = []
        found = self._scan()
        head, B = self._probe(found)
        C = head[5].shape[1]
        mix_kind = "none" if head[2] is None else ("mixup" if head[4] is None else "cutmix")
        order_file = self._order_file(order, order_from)
        N, how_n = self._count_images(num_images, order_file, found, B)
        nb = -(-N // B)
        self._files = found
        self.present = self._presence(found, N, B, nb)
        epochs = sorted(self.present)
        sizes = image_sizes_of(image_size, N)
        self.info = SourceInfo(layout, C, N, epochs, B, mix_kind=mix_kind, image_sizes=sizes)
        self.info.notes.append(f"image count {N}: {how_n}")
        if self._pool_note:
            self.info.notes.append(self._pool_note)
        self._sizes = np.broadcast_to(np.asarray(sizes, np.int64), (N, 2)) if np.ndim(sizes) == 1 else np.asarray(sizes)
        self._orders, how = self._make_orders(order, order_file, N, epochs)
        self.info.attrs.update({"source_layout": layout, "source_dir": str(self.root.resolve()), "order_source": how})
        self.info.notes.append(f"sample order: {how}")

    # -- scanning -----------------------------------------------------------------------
    def _scan(self) -> dict[int, dict[int, Path]]:
        """Every ``epoch_<e>/batch_<b>.tar`` present, by epoch and batch (nothing opened yet)."""
        found: dict[int, dict[int, Path]] = {}
        for d in self.root.iterdir():
            m = EPOCH_DIR.match(d.name)
            if not (m and d.is_dir()):
                continue
            files = {int(mb.group(1)): f for f in d.iterdir() if (mb := BATCH_FILE.match(f.name))}
            if files:
                found[int(m.group(1))] = files
            else:
                self._bad(f"{d} holds no batch_<b>.tar files")
        if not found:
            raise LabelStoreError(f"{self.root} holds no readable epoch_<e>/batch_<b>.tar folders")
        epochs = sorted(found)
        gaps = sorted(set(range(epochs[-1] + 1)) - set(epochs))
        if gaps:
            self._bad(f"{self.root}: epoch folders missing: {', '.join(f'epoch_{g}' for g in gaps[:5])}"
                      f"{' …' if len(gaps) > 5 else ''}", what="pack the epochs present")
        return found

    def _bad(self, msg: str, what: str = "leave such batches out") -> None:
        if not self.skip_bad:
            raise LabelStoreError(f"{msg} (pass --skip-bad to {what} and report them)")
        self.skipped.append(msg)

    def _probe(self, found) -> tuple[list, int]:
        """The first readable file that is not an epoch's highest batch: its fields and record
        count (the batch size). A bad file is skipped under skip_bad, like any other."""
        candidates = [(e, b) for e in sorted(found) for b in sorted(found[e])]
        full = [(e, b) for e, b in candidates if b < max(found[e])] or candidates
        for e, b in full:
            try:
                fields = self._fields(self._load(found[e][b]), found[e][b])
                return fields, fields[5].shape[0]
            except LabelStoreError as exc:
                if not self.skip_bad:
                    raise
                self.skipped.append(f"{found[e][b]}: {exc}")
        raise LabelStoreError(f"{self.root}: no batch file is readable ({'; '.join(self.skipped[:2])})")

    def _order_file(self, order: str, order_from: Path | None) -> Path | None:
        if order_from is not None:
            return Path(order_from)
        lpld_json = self.root / LPLD_ORDERS
        return lpld_json if order == "auto" and lpld_json.is_file() else None

    def _given_count(self, num_images, order_file) -> tuple[int, str] | None:
        """(N, how it is known) when the user or a complete order file says it, else None."""
        if num_images is not None:
            return int(num_images), "given (--num-images / --images)"
        if order_file is not None:
            return _orders.num_images_in(order_file, self.root), f"the length of the orders in {order_file.name}"
        return None

    def _count_images(self, num_images, order_file, found, B) -> tuple[int, str]:
        """(N, how it is known). Refuses when the files cannot prove it."""
        given = self._given_count(num_images, order_file)
        if given is not None:
            return given
        top = max(max(files) for files in found.values())
        for e in sorted(found):  # a short batch at the highest index proves where every epoch ends
            if top in found[e]:
                try:
                    n = self._fields(self._load(found[e][top]), found[e][top])[5].shape[0]
                except LabelStoreError:
                    if not self.skip_bad:
                        raise
                    continue  # left out when packing; another epoch's copy of this batch may prove it
                if n < B:
                    return B * top + n, f"batch_{top}.tar holds {n} < {B} records, so it is each epoch's last batch"
                break
        raise LabelStoreError(
            f"cannot tell how many images {self.root} labels: every file up to batch_{top}.tar holds a full batch of "
            f"{B}, so further batches may be missing. Pass --num-images N, or --images with the image set "
            f"(.npz/.npy), or --order-from with the relabel run's order file")

    def _presence(self, found, N: int, B: int, nb: int) -> dict[int, list[int]]:
        """The batches each epoch holds; a partial last epoch is an LPLD pool, other gaps are errors."""
        present = {}
        for e in sorted(found):
            beyond = [b for b in found[e] if b >= nb]
            if beyond:
                raise LabelStoreError(
                    f"{self.root / f'epoch_{e}' / f'batch_{min(beyond)}.tar'} lies beyond {N} images in batches of {B} "
                    f"(batch_0..batch_{nb - 1}); the image count is wrong: check --num-images / --images")
            present[e] = sorted(found[e])
        epochs = sorted(present)
        last = present[epochs[-1]]
        if len(last) < nb and last == list(range(len(last))) and all(len(present[e]) == nb for e in epochs[:-1]):
            self._pool_note = (f"epoch {epochs[-1]} is partial: batches 0..{len(last) - 1} of {nb} "
                               "(the last epoch of an LPLD label pool); stored as a partial epoch")
            return present
        for e in epochs:
            missing = sorted(set(range(nb)) - set(present[e]))
            if missing:
                self._bad(f"{self.root / f'epoch_{e}'}: batch files missing ({describe_ranges(missing)}) "
                          f"of batch_0..batch_{nb - 1}")
        return present

    def _make_orders(self, order, order_file, N, epochs):
        if order_file is not None:
            how = f"read from {LPLD_ORDERS} (LPLD)" if order_file.name == LPLD_ORDERS and order_file.parent == self.root \
                else f"read from {order_file}"
            return _orders.load_orders(order_file, N, epochs, self.root), how
        if order == "auto" and self.layout == "lpld":
            raise LabelStoreError(f"{self.root}: LPLD folders carry {LPLD_ORDERS}; it is missing (pass --order-from FILE)")
        if order == "auto" and self._pool_note:
            raise LabelStoreError(
                f"{self.root} ends in a partial epoch, as LPLD's pruned label pools do, but has no {LPLD_ORDERS}: "
                "LPLD's orders cannot be re-created (re-creating SRe2L's RandomSampler(seed 42) gave a wrong order for "
                "a real LPLD directory). Pass --order-from with the run's order file, or --order NAME if you know how "
                "the relabel run drew its order")
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
        if batch not in self._files.get(epoch, {}):
            raise LabelStoreError(f"{self.root / f'epoch_{epoch}' / f'batch_{batch}.tar'} is missing")
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
