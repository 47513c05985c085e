"""The ways into a label file besides one (epoch, batch) read: ``f[epoch, batch]`` with negative
indices and slices, iteration, one image's record (``locate``, ``read_sample``) and one image's
records across every epoch (``image_history``).

``Lookups`` is a mixin of ``LabelFile`` (labelstore/reader.py) alone, kept apart so reader.py
holds the file itself: opening, the per-process handle, the tables, reading one chunk. It
uses that class's tables and chunk reads (``_check_epoch``, ``_order_and_inverse``,
``_order_cache``, ``_lock``, ``_file``, ``_chunk_row``, ``_row_bytes``, ``_decode_labels``).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from . import _chunk, rng
from ._format import DERIVED, EXPLICIT
from .batch import Batch, ImageHistory
from .crops import draw_crops, draw_mix
from .errors import LabelStoreError

_WHOLE_TABLE_BYTES = 8 << 20  # image_history reads a chunk table up to this size whole (not kept)


class Lookups:
    """``LabelFile``'s indexing, iteration and by-image reads, on top of its batch reads."""

    def __getitem__(self, key: tuple[int | slice, int | slice]) -> Batch | list[Batch]:
        """``f[epoch, batch]``: one Batch; negative indices count from the end, and a slice in
        either place gives a list (``f[-1, :]``: every batch of the last epoch)."""
        if not (isinstance(key, tuple) and len(key) == 2):
            raise LabelStoreError("index a LabelFile by (epoch, batch), e.g. f[0, 3], f[-1, -1] or f[0, 2:5]; "
                                  "f.batches(epoch) iterates one epoch and `for batch in f` every stored batch")
        e_key, b_key = key
        if isinstance(e_key, slice):
            return [self[e, b_key] for e in range(self.num_epochs)[e_key]]
        epoch = self._check_epoch(_from_end(e_key, self.num_epochs, "epoch"))
        if isinstance(b_key, slice):
            return [self.read_batch(epoch, b) for b in range(self.num_batches(epoch))[b_key]]
        return self.read_batch(epoch, _from_end(b_key, self.num_batches(epoch), "batch"))

    def __iter__(self) -> Iterator[Batch]:
        """Every stored batch, epoch by epoch (``batches()``)."""
        return self.batches()

    def batches(self, epoch: int | None = None) -> Iterator[Batch]:
        """Every stored batch of ``epoch`` (negative counts from the end), or of all epochs, in order.

        Batches are read one at a time, so memory stays that of one batch; ``for batch in f``
        is ``f.batches()``. A partial epoch yields the batches it stores.
        """
        epochs = range(self.num_epochs) if epoch is None else [_from_end(epoch, self.num_epochs, "epoch")]
        return (self.read_batch(e, int(b)) for e in epochs for b in self.stored_batches(e))  # checked now, read lazily

    def locate(self, epoch: int, image: int) -> tuple[int, int]:
        """(batch, position in batch) of image ``image`` in ``epoch``."""
        epoch = self._check_epoch(epoch)
        if not isinstance(image, (int, np.integer)) or not 0 <= image < self.num_images:
            raise LabelStoreError(f"image {image} is out of range: the file labels images 0..{self.num_images - 1}")
        pos = int(self._order_and_inverse(epoch)[1][image])
        bs = self.batch_size(epoch)
        return pos // bs, pos % bs

    def read_sample(self, epoch: int, image: int) -> Batch:
        """The record of one image in one epoch, as a one-record Batch (its batch's mix included)."""
        b, p = self.locate(epoch, image)
        full = self.read_batch(epoch, b)
        return Batch(epoch, b, full.indices[p : p + 1], full.logits[p : p + 1], full.boxes[p : p + 1], full.flips[p : p + 1], full.mix)

    def image_history(self, image: int) -> ImageHistory:
        """Every stored record of one image, across all epochs: logits, crop, flip and its batch's mix.

        Reads one chunk per epoch, as a loop of ``read_sample`` does, but finds the image's
        position without sorting each epoch's order and draws the crop of this record alone.
        Epochs whose batch holding the image is not stored (partial epochs) are left out.
        """
        if not isinstance(image, (int, np.integer)) or not 0 <= image < self.num_images:
            raise LabelStoreError(f"image {image} is out of range: the file labels images 0..{self.num_images - 1}")
        image = int(image)
        t = self.epoch_table
        batches, positions = np.divmod(self._positions(image), t["batch_size"].astype(np.int64))
        complete = t["num_stored"] == t["num_batches"]
        rows = {}
        if complete.any():  # one read of the rows needed, not a table per epoch
            idx = (t["first_chunk"].astype(np.int64) + batches)[complete]
            try:
                table = self._file()["chunks"]
                small = table.shape[0] * table.dtype.itemsize <= _WHOLE_TABLE_BYTES  # one contiguous read is faster
                got = table[...][idx] if small else table[idx]
            except Exception as exc:
                raise LabelStoreError(f"{self.path}: the chunk table is corrupted ({exc}); run `labelstore verify`") from None
            rows = dict(zip(np.flatnonzero(complete).tolist(), got))
        keep, logits, boxes, flips, mix_of = [], [], [], [], {}
        for e in range(self.num_epochs):
            b, p = int(batches[e]), int(positions[e])
            if e in rows:
                row = rows[e]
                if int(row["epoch"]) != e or int(row["batch"]) != b:
                    raise LabelStoreError(f"{self.path}: the chunk table is inconsistent at epoch {e}; run `labelstore verify`")
            elif b in set(self.stored_batches(e).tolist()):
                row = self._chunk_row(e, b)
            else:
                continue
            blob = self._row_bytes(e, b, row)
            logits.append(self._decode_row(row, blob, e, b, p))
            n, ln, cn = int(row["num_records"]), int(row["label_nbytes"]), int(row["crop_nbytes"])
            if self.crops_mode == EXPLICIT:
                bx, fl = _chunk.decode_crops(blob[ln : ln + cn], n)
                boxes.append(bx[p])
                flips.append(bool(fl[p]))
            if self.mix_mode == EXPLICIT:
                mix_of[e] = _chunk.decode_mix(blob[ln + cn :], n)
            keep.append(e)
        keep = np.asarray(keep, np.int64)
        if self.crops_mode != EXPLICIT:  # one draw for every epoch: the epoch is a key word like the image
            boxes, flips = draw_crops(self.crop_policy, self.seed, keep[:, None].astype(np.uint64),
                                      np.full(len(keep), image), np.repeat(self.image_sizes[[image]], len(keep), 0))

        def mixes():  # drawn when asked: most uses of a history want its logits
            if self.mix_mode != DERIVED:
                return [mix_of.get(int(e)) for e in keep]
            return [draw_mix(self.mix_policy, self.crop_policy.size, self.seed, int(e), int(batches[e]),
                             self._records_in(int(e), int(batches[e]))) for e in keep]

        return ImageHistory(image, keep, batches[keep], positions[keep],
                            np.stack(logits) if logits else np.zeros((0, self.num_classes), np.float32),
                            np.asarray(boxes, np.int32).reshape(-1, 4), np.asarray(flips, bool).reshape(-1), mixes)

    def _decode_row(self, row, blob, epoch, batch, position) -> np.ndarray:
        """One record's logits: a codec that can decode single rows (``decode_rows``) skips the rest."""
        decode_rows = getattr(self.codec, "decode_rows", None)
        if decode_rows is None:
            return self._decode_labels(row, blob, epoch, batch)[position]
        try:
            return np.asarray(decode_rows(blob[: int(row["label_nbytes"])], [position]), np.float32)[0]
        except LabelStoreError:
            raise
        except Exception as exc:
            raise LabelStoreError(f"{self.path}: epoch {epoch} batch {batch} does not decode ({exc}); run `labelstore verify`") from None

    def _records_in(self, epoch: int, batch: int) -> int:
        bs = self.batch_size(epoch)
        return min(bs, self.num_images - batch * bs)

    def _positions(self, image: int) -> np.ndarray:
        """Position of ``image`` in every epoch's order, without building the orders (a sort each)."""
        out = np.empty(self.num_epochs, np.int64)
        derived = []
        for e in range(self.num_epochs):
            with self._lock:
                cached = self._order_cache.get(e)
            if cached is not None:
                out[e] = cached[1][image]
            elif self.orders_mode == EXPLICIT:
                out[e] = np.flatnonzero(self._file()["orders"][e] == image)[0]
            else:
                derived.append(e)
        # draw_order is a stable argsort of per-index keys: the image's rank among them
        ids = np.arange(self.num_images, dtype=np.uint64)
        step = max(1, (1 << 22) // max(1, self.num_images))  # epochs per block: bounded memory
        for s in range(0, len(derived), step):
            es = np.asarray(derived[s : s + step], np.uint64)[:, None]
            keys = rng.hash64(self.seed, es, rng.STREAM_ORDER, ids[None, :])
            k = keys[:, image : image + 1]
            out[es[:, 0].astype(np.int64)] = (keys < k).sum(1) + (keys[:, :image] == k).sum(1)
        return out


def _from_end(i, n: int, what: str) -> int:
    """A Python-style index (negative counts from the end) into ``range(n)``, else a clear error."""
    if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
        raise LabelStoreError(f"{what} index must be an integer or a slice, got {i!r}")
    if not -n <= i < n:
        where = "the file stores epochs" if what == "epoch" else "this epoch has batches"
        raise LabelStoreError(f"{what} {i} is out of range: {where} 0..{n - 1} (or -{n}..-1 from the end)")
    return int(i) % n
