"""LabelFile: random access to a finished label set by (epoch, batch) or (epoch, sample).

Opening reads only the header and the per-epoch table. Reading a batch reads and decodes
that batch's chunk alone (one contiguous range of /data), checks its crc32, and re-derives
or decodes its crops and mix. The HDF5 handle is opened lazily in each process, so a
LabelFile can be handed to DataLoader workers or forked processes safely.
"""
from __future__ import annotations

import json
import os
import threading
import zlib
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np

from . import _chunk
from ._build import meta_crc32
from ._format import DERIVED, EXPLICIT
from ._lookups import Lookups
from ._open import check_tables, check_userblock, root_attributes
from .batch import Batch, ImageHistory  # noqa: F401  (ImageHistory: image_history's type, importable from here)
from .codecs import LabelCodec, get_codec
from .crops import CropPolicy, MixPolicy, draw_crops, draw_mix, draw_order
from .errors import LabelStoreError, describe_ranges
from .fingerprint import check_fingerprint

_CACHE_EPOCHS = 4  # per-epoch tables kept in memory: bounded whatever the file size


class LabelFile(Lookups):
    """A finished label file, opened for reading. Context manager; mapping-like by (epoch, batch).

    Indexing (``f[e, b]``), iteration and the by-image reads (``locate``, ``read_sample``,
    ``image_history``) come from ``Lookups`` (labelstore/_lookups.py).
    """

    def __init__(self, path: str | Path, *, verify_checksums: bool = True):
        self.path = Path(path)
        self.verify_checksums = verify_checksums
        self._pid = None
        self._h5 = None
        self._fd = None  # a plain descriptor for /data reads, opened per process like the h5py handle
        self._chunk_cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._order_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self.file_crc32 = check_userblock(self.path)
        f = self._file()
        try:
            attrs = root_attributes(f)
            self._attrs = attrs
            self.epoch_table = check_tables(f, attrs, self.path)  # format name and version first
            self.format_version = int(attrs["format_version"])
            if self.verify_checksums and int(attrs["meta_crc32"]) != meta_crc32(attrs):
                raise LabelStoreError(f"{self.path}: metadata checksum mismatch (the header is corrupted); run `labelstore verify`")
            codec_arrays = {k: v[...] for k, v in f["codec_arrays"].items()} if "codec_arrays" in f else None
            # /data is contiguous: a chunk is one pread at a fixed offset, without h5py's per-read overhead
            self._data_size = int(f["data"].shape[0])
            self._data_offset = f["data"].id.get_offset() if self._data_size else None
            self.image_sizes = f["image_sizes"][...].astype(np.int64) if "image_sizes" in f else None
        except LabelStoreError:
            self.close()
            raise
        except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ... on damage
            self.close()
            raise LabelStoreError(f"{self.path} is corrupted or incomplete ({exc}); run `labelstore verify`") from None
        self.num_classes = int(attrs["num_classes"])
        self.num_images = int(attrs["num_images"])
        self.seed = int(attrs["seed"])
        self.image_fingerprint = attrs["image_fingerprint"] or None
        self.crops_mode, self.orders_mode, self.mix_mode = attrs["crops"], attrs["orders"], attrs["mix"]
        self.crop_policy = CropPolicy.from_dict(json.loads(attrs["crop_policy"]))
        self.mix_policy = MixPolicy.from_dict(json.loads(attrs["mix_policy"]))
        self.source = attrs["source"]
        self.source_temperature = float(attrs["source_temperature"]) or None
        self.teacher = json.loads(attrs["teacher"])
        self.user_attrs = json.loads(attrs["user_attrs"])
        # how the teacher's pixels were made (format 2; None in older files): replay's defaults
        self.pixels: dict | None = json.loads(attrs["pixels"]) if "pixels" in attrs else None
        self.codec: LabelCodec = get_codec(json.loads(attrs["codec"]), codec_arrays)
        self.num_epochs = len(self.epoch_table)

    # -- the lazy, per-process handle -----------------------------------------------------
    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            with self._open_lock:  # a loader's label thread and the main thread may both open it first
                if self._h5 is None or self._pid != os.getpid():
                    self._h5 = self._fd = None  # handles inherited across fork are never used
                    try:
                        h5 = h5py.File(self.path, "r")
                    except FileNotFoundError:
                        raise LabelStoreError(f"no label file at {self.path}") from None
                    except Exception as exc:
                        raise LabelStoreError(f"cannot open {self.path} as a label file ({exc}); run `labelstore verify`") from None
                    self._h5, self._pid = h5, os.getpid()
        return self._h5

    def _data_fd(self) -> int:
        """The plain descriptor for /data reads, opened once per process (after the h5py handle)."""
        self._file()
        if self._fd is None:
            with self._open_lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"], state["_pid"], state["_fd"] = None, None, None
        state["_chunk_cache"], state["_order_cache"] = OrderedDict(), OrderedDict()
        del state["_lock"], state["_open_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock, self._open_lock = threading.Lock(), threading.Lock()

    def close(self) -> None:
        if self._pid == os.getpid():
            if self._h5 is not None:
                self._h5.close()
            if self._fd is not None:
                os.close(self._fd)
        self._h5 = self._fd = None

    def __enter__(self) -> "LabelFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- epochs and orders --------------------------------------------------------------
    def _check_epoch(self, epoch: int) -> int:
        if not isinstance(epoch, (int, np.integer)) or not 0 <= epoch < self.num_epochs:
            raise LabelStoreError(f"epoch {epoch} is out of range: the file stores epochs 0..{self.num_epochs - 1}")
        return int(epoch)

    def batch_size(self, epoch: int) -> int:
        return int(self.epoch_table[self._check_epoch(epoch)]["batch_size"])

    def num_batches(self, epoch: int) -> int:
        """Batches the epoch has (``ceil(num_images / batch_size)``); a partial epoch stores fewer."""
        return int(self.epoch_table[self._check_epoch(epoch)]["num_batches"])

    def is_complete(self, epoch: int) -> bool:
        """Whether every batch of ``epoch`` is stored (LPLD's label pools end in a partial epoch)."""
        row = self.epoch_table[self._check_epoch(epoch)]
        return int(row["num_stored"]) == int(row["num_batches"])

    @property
    def complete(self) -> bool:
        """Whether every stored epoch holds all of its batches."""
        return bool((self.epoch_table["num_stored"] == self.epoch_table["num_batches"]).all())

    def stored_batches(self, epoch: int | None = None) -> np.ndarray:
        """The batch indices ``epoch`` holds (ascending); without ``epoch``, an ``(P, 2)`` array of
        every stored (epoch, batch), in file order."""
        if epoch is None:
            return np.concatenate([np.stack([np.full(int(r["num_stored"]), e), self.stored_batches(e)], 1)
                                   for e, r in enumerate(self.epoch_table)]).astype(np.int64)
        epoch = self._check_epoch(epoch)
        if self.is_complete(epoch):
            return np.arange(self.num_batches(epoch), dtype=np.int64)
        return self._epoch_rows(epoch)["batch"].astype(np.int64)

    @cached_property
    def num_records(self) -> int:
        """Records stored: ``num_epochs * num_images`` unless an epoch is partial."""
        total = 0
        for e, r in enumerate(self.epoch_table):
            bs, nb, ns = int(r["batch_size"]), int(r["num_batches"]), int(r["num_stored"])
            last = self.num_images - (nb - 1) * bs  # the short last batch
            total += self.num_images if ns == nb else ns * bs - (bs - last) * int(self.stored_batches(e)[-1] == nb - 1)
        return total

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's sample order (image ids by position)."""
        return self._order_and_inverse(self._check_epoch(epoch))[0]

    def _cached(self, cache: OrderedDict, key: int, compute):
        """A small LRU of per-epoch tables, safe to share between threads."""
        with self._lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        value = compute()
        with self._lock:
            cache[key] = value
            while len(cache) > _CACHE_EPOCHS:
                cache.popitem(last=False)
        return value

    def _order_and_inverse(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        def compute():
            if self.orders_mode == EXPLICIT:
                try:
                    order = self._file()["orders"][epoch].astype(np.int64)
                except Exception as exc:
                    raise LabelStoreError(f"{self.path}: the order of epoch {epoch} is corrupted ({exc}); run `labelstore verify`") from None
            else:
                order = draw_order(self.seed, epoch, self.num_images)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            return order, inverse

        return self._cached(self._order_cache, epoch, compute)

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        """The chunk-table rows of one epoch's stored batches (cached)."""
        def compute():
            first, ns = int(self.epoch_table[epoch]["first_chunk"]), int(self.epoch_table[epoch]["num_stored"])
            try:
                rows = self._file()["chunks"][first : first + ns]
            except Exception as exc:
                raise LabelStoreError(f"{self.path}: the chunk table is corrupted ({exc}); run `labelstore verify`") from None
            b = rows["batch"].astype(np.int64)
            if (rows["epoch"] != epoch).any() or (np.diff(b) <= 0).any() or (len(b) and b[-1] >= self.num_batches(epoch)):
                raise LabelStoreError(f"{self.path}: the chunk table is inconsistent at epoch {epoch}; run `labelstore verify`")
            return rows

        return self._cached(self._chunk_cache, epoch, compute)

    def _chunk_row(self, epoch: int, batch: int) -> np.void:
        nb = self.num_batches(epoch)
        if not isinstance(batch, (int, np.integer)) or not 0 <= batch < nb:
            raise LabelStoreError(f"batch {batch} is out of range: epoch {epoch} has batches 0..{nb - 1}")
        rows = self._epoch_rows(epoch)
        if len(rows) == nb:
            row = rows[batch]
        else:  # a partial epoch: its rows are the stored batches, ascending
            i = int(np.searchsorted(rows["batch"], batch))
            if i == len(rows) or int(rows[i]["batch"]) != batch:
                raise LabelStoreError(
                    f"epoch {epoch} batch {batch} is not stored: epoch {epoch} is partial and holds batches "
                    f"{describe_ranges(rows['batch'])} of 0..{nb - 1} (see LabelFile.stored_batches)")
            row = rows[i]
        if int(row["epoch"]) != epoch or int(row["batch"]) != batch:
            raise LabelStoreError(f"{self.path}: the chunk table is inconsistent at epoch {epoch} batch {batch}; run `labelstore verify`")
        return row

    # -- reading ------------------------------------------------------------------------
    def read_chunk_bytes(self, epoch: int, batch: int) -> tuple[np.void, bytes]:
        """The raw bytes of one (epoch, batch) chunk, checksum-verified."""
        epoch = self._check_epoch(epoch)
        row = self._chunk_row(epoch, batch)
        return row, self._row_bytes(epoch, batch, row)

    def _row_bytes(self, epoch: int, batch: int, row: np.void) -> bytes:
        start = int(row["offset"])
        size = int(row["label_nbytes"]) + int(row["crop_nbytes"]) + int(row["mix_nbytes"])
        if start + size > self._data_size:
            raise LabelStoreError(f"{self.path}: epoch {epoch} batch {batch} points past the end of the data (corrupted); run `labelstore verify`")
        try:
            if self._data_offset is not None:
                blob = os.pread(self._data_fd(), size, self._data_offset + start)
            else:
                blob = self._file()["data"][start : start + size].tobytes()
        except Exception as exc:
            raise LabelStoreError(f"{self.path}: cannot read epoch {epoch} batch {batch} ({exc}); run `labelstore verify`") from None
        if len(blob) != size or (self.verify_checksums and zlib.crc32(blob) != int(row["crc32"])):
            raise LabelStoreError(
                f"{self.path}: epoch {epoch} batch {batch} failed its checksum (the file is corrupted); "
                "run `labelstore verify` and restore the file from a copy"
            )
        return blob

    def read_logits(self, epoch: int, batch: int) -> np.ndarray:
        """Only the decoded logits of one batch (skips crops and mix)."""
        row, blob = self.read_chunk_bytes(epoch, batch)
        return self._decode_labels(row, blob, epoch, batch)

    def _decode_labels(self, row, blob, epoch, batch) -> np.ndarray:
        try:
            logits = self.codec.decode(blob[: int(row["label_nbytes"])])
        except LabelStoreError:
            raise
        except Exception as exc:  # a codec must never leak a low-level error to the user
            raise LabelStoreError(f"{self.path}: epoch {epoch} batch {batch} does not decode ({exc}); run `labelstore verify`") from None
        if logits.shape != (int(row["num_records"]), self.num_classes):
            raise LabelStoreError(f"{self.path}: epoch {epoch} batch {batch} decodes to shape {logits.shape}; run `labelstore verify`")
        return logits

    def read_batch(self, epoch: int, batch: int) -> Batch:
        """Everything stored for one batch: images, crops, mix and the decoded logits."""
        row, blob = self.read_chunk_bytes(epoch, batch)
        out = self._crops(epoch, batch, row, blob)
        out.logits = self._decode_labels(row, blob, epoch, batch)
        return out

    def read_crops(self, epoch: int, batch: int) -> Batch:
        """One batch without its labels (``logits`` is None): which images, how cropped and mixed.

        With derived crops and mix this touches no stored bytes, so a loader can start decoding
        pixels before it decodes the labels.
        """
        epoch = self._check_epoch(epoch)
        row = self._chunk_row(epoch, batch)
        if self.crops_mode == EXPLICIT or self.mix_mode == EXPLICIT:
            row, blob = self.read_chunk_bytes(epoch, batch)
        else:
            blob = None
        return self._crops(epoch, batch, row, blob)

    def _crops(self, epoch: int, batch: int, row, blob: bytes | None) -> Batch:
        n = int(row["num_records"])
        bs = self.batch_size(epoch)
        indices = self.order(epoch)[batch * bs : batch * bs + n]
        ln, cn = int(row["label_nbytes"]), int(row["crop_nbytes"])
        if self.crops_mode == EXPLICIT:
            boxes, flips = _chunk.decode_crops(blob[ln : ln + cn], n)
        else:
            boxes, flips = draw_crops(self.crop_policy, self.seed, epoch, indices, self.image_sizes[indices])
        if self.mix_mode == EXPLICIT:
            mix = _chunk.decode_mix(blob[ln + cn :], n)
        elif self.mix_mode == DERIVED:
            mix = draw_mix(self.mix_policy, self.crop_policy.size, self.seed, epoch, batch, n)
        else:
            mix = None
        return Batch(epoch, batch, indices, None, boxes, flips, mix)

    def __len__(self) -> int:
        """Stored batches (chunks) in the file."""
        return int(self.epoch_table["num_stored"].sum())

    def check_images(self, fingerprint: str | None, what: str = "the images") -> None:
        """Raise LabelStoreError if ``fingerprint`` is not the image set these labels belong to."""
        check_fingerprint(self.image_fingerprint, fingerprint, what)

    # -- sizes --------------------------------------------------------------------------
    @cached_property
    def byte_breakdown(self) -> dict[str, int]:
        """Bytes by purpose: labels, crops, mix, orders, metadata (the rest of the file)."""
        f = self._file()
        chunks = f["chunks"][...]
        out = {
            "labels": int(chunks["label_nbytes"].sum(dtype=np.int64)),
            "crops": int(chunks["crop_nbytes"].sum(dtype=np.int64)),
            "mix": int(chunks["mix_nbytes"].sum(dtype=np.int64)),
            "orders": int(f["orders"].id.get_storage_size()) if "orders" in f else 0,
        }
        if "image_sizes" in f:
            out["crops"] += int(f["image_sizes"].id.get_storage_size())
        out["metadata"] = self.path.stat().st_size - sum(out.values())
        return out

    def __repr__(self) -> str:
        return (
            f"<LabelFile {self.path.name}: {self.num_epochs} epochs x {self.num_images} images, "
            f"{self.num_classes} classes, codec {self.codec.codec_id}>"
        )
