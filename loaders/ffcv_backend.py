"""The FFCV pixel backend: stored crops replayed inside FFCV's compiled pipeline.

``FFCVBackend.iter_batches`` writes each record's box and flip into a parameter table keyed
by sample id (``loaders._ffcv_ops``), points a SEQUENTIAL FFCV Loader at the records' ids,
and lets the replay decoder crop, resize and flip every image before batching, so
variable-size images work. Because the table holds one row per image and FFCV batches have
a fixed size, a call is cut into *segments* — runs of batches in which only the last batch
may be short — and each segment is one FFCV pass. An image used again within a pass (label
pools reuse stored batches) gets a virtual id ``k * N + i`` with its own parameter row: the
Loader's metadata table is tiled ``layers`` times, so row ``k * N + i`` describes image ``i``.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from labelstore import LabelStoreError

from .backend import CropBatch, check_crop_batch
from .beton import BetonInfo, open_beton


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# Compiled Loaders are never garbage-collected: with numba 0.68, collecting FFCV's numba
# dispatchers runs finalizers that race (KeyError in Dispatcher finalizer, and a CPython 3.11
# "AST constructor recursion depth mismatch" in a later ast.parse). A backend that goes away
# hands its Loaders to this pool; a later backend on the same beton and settings reuses them,
# which also saves the seconds of recompilation.
_FREE: dict[tuple, list[tuple]] = {}
_MAX_LAYERS = 16  # uses of one image per FFCV pass (virtual ids; see plan_segments)
_LAYER_BYTES = 256 << 20  # memory allowed for the tiled metadata + parameter table


def _release(loaders: dict) -> None:
    for entry in loaders.values():
        _FREE.setdefault(entry[0], []).append(entry)
    loaders.clear()


class _Piece:
    """Rows ``rows`` of CropBatch number ``batch``, as virtual sample ids ``vids``: one FFCV batch."""

    __slots__ = ("batch", "rows", "vids")

    def __init__(self, batch: int, rows: np.ndarray, vids: np.ndarray):
        self.batch, self.rows, self.vids = batch, rows, vids


def _occurrence(ids: np.ndarray) -> np.ndarray:
    """For each position, how many times its id appeared earlier in ``ids`` (0 for the first)."""
    order = np.argsort(ids, kind="stable")
    first = np.r_[0, np.flatnonzero(np.diff(ids[order])) + 1]
    occ = np.arange(len(ids)) - np.repeat(first, np.diff(np.r_[first, len(ids)]))
    rank = np.empty(len(ids), np.int64)
    rank[order] = occ
    return rank


def plan_segments(batches: Sequence[CropBatch], batch_size: int, num_images: int, layers: int = 1) -> list[list[_Piece]]:
    """Cut a call into FFCV passes: only a pass's last batch may be short; an image at most ``layers`` times per pass.

    The k-th use of image ``i`` in a pass gets the virtual id ``k * num_images + i`` (its own
    row of the parameter table; the Loader's metadata table is tiled ``layers`` times). A
    CropBatch that names one image more than ``layers`` times is split into pieces, each its
    own pass, and put back together before it is yielded.
    """
    segments: list[list[_Piece]] = []
    current: list[_Piece] = []
    used = np.zeros(num_images, np.int64)  # uses of each image in the current pass
    touched: list[np.ndarray] = []

    def close():
        nonlocal current
        if current:
            segments.append(current)
            current = []
        for t in touched:
            used[t] = 0
        touched.clear()

    for b, cb in enumerate(batches):
        ids = np.asarray(cb.indices, np.int64)
        if len(ids) == 0:
            continue
        rank = _occurrence(ids)
        if rank.max() >= layers:  # more uses in this one batch than layers: rounds of `layers` uses
            close()
            for r in range(0, int(rank.max()) + 1, layers):
                rows = np.flatnonzero((rank >= r) & (rank < r + layers))
                segments.append([_Piece(b, rows, ids[rows] + (rank[rows] - r) * num_images)])
            continue
        layer = used[ids] + rank
        if layer.max() >= layers:
            close()
            layer = rank
        current.append(_Piece(b, np.arange(len(ids)), ids + layer * num_images))
        np.add.at(used, ids, 1)
        touched.append(ids)
        if len(ids) < batch_size:
            close()
    close()
    return segments


class FFCVBackend:
    """PixelBackend over an FFCV ``.beton`` written by :func:`loaders.write_beton`.

    ``num_workers`` numba threads decode (FFCV sets numba's and torch's thread counts to
    it); ``batches_ahead`` batches are prefetched. One FFCV Loader is built and compiled per
    (output size, batch size) and reused across calls. Yielded tensors are views of FFCV's
    buffers, valid until the next batch is requested, unless ``copy=True`` (see docs).
    """

    def __init__(
        self,
        beton_path: str | Path,
        *,
        num_workers: int | None = None,
        os_cache: bool = True,
        batches_ahead: int = 3,
        copy: bool = False,
        layers: int | None = None,
    ):
        self.info: BetonInfo = open_beton(beton_path)
        self.path = self.info.path
        self.num_images = self.info.num_images
        self.image_sizes = self.info.image_sizes
        self.fingerprint = self.info.fingerprint
        self.labels = self.info.labels
        self.num_workers = int(num_workers) if num_workers else _default_workers()
        self.os_cache = bool(os_cache)
        self.batches_ahead = max(1, int(batches_ahead))
        self.copy = bool(copy)
        self.layers = self._layers(layers)
        self._loaders: dict[tuple[int, int, int], tuple] = {}  # (H, W, bs) -> (pool key, Loader, ParamTable)
        weakref.finalize(self, _release, self._loaders)
        self.passes = 0  # FFCV passes run so far (one per segment): for tests and profiling

    @property
    def pixel_path(self) -> dict[str, str]:
        """The pixel path, recorded in label files (loaders.contract): a jpg beton's pixels differ from a raw one's."""
        mode = self.info.write_mode + (f" q{self.info.jpeg_quality}" if self.info.jpeg_quality else "")
        return {"backend": "ffcv", "interpolation": f"area (OpenCV INTER_AREA), beton {mode}"}

    def _layers(self, layers: int | None) -> int:
        """Uses of one image per FFCV pass (label pools reuse images); bounded by memory, 1 without os_cache."""
        if not self.os_cache:  # FFCV's process cache schedules pages by sample id: no virtual ids
            return 1
        if layers is None:  # the tiled metadata + parameter rows cost ~(row + 20) bytes each
            from ffcv.reader import Reader

            row = 20 + Reader(str(self.path)).metadata_type.itemsize
            return int(max(1, min(_MAX_LAYERS, _LAYER_BYTES // (row * max(1, self.num_images)))))
        if int(layers) < 1:
            raise LabelStoreError(f"layers must be a positive integer, got {layers}")
        return int(layers)

    # -- the Loader, built once per (H, W, batch size) --------------------------------------
    def _loader(self, H: int, W: int, batch_size: int):
        """The compiled Loader (and the parameter table its decoder reads) for this output size."""
        key = (H, W, batch_size)
        if key not in self._loaders:
            st = self.path.stat()
            pool_key = (str(self.path.resolve()), st.st_size, st.st_mtime_ns, H, W, batch_size,
                        self.num_workers, self.os_cache, self.batches_ahead, self.layers)
            free = _FREE.get(pool_key)
            self._loaders[key] = free.pop() if free else (pool_key, *self._build(H, W, batch_size))
        return self._loaders[key][1:]

    def _build(self, H: int, W: int, batch_size: int):
        from ffcv.loader import Loader, OrderOption
        from ffcv.pipeline import PipelineSpec
        from ffcv.transforms import ToTensor, ToTorchImage

        from ._ffcv_ops import ParamTable, ReplayCropDecoder

        params = ParamTable(self.num_images * self.layers)
        decoder = ReplayCropDecoder((H, W), params)
        pipelines = {name: None for name in self._field_names()}
        pipelines[self.info.image_field] = PipelineSpec(
            self.info.image_field, decoder=decoder, transforms=[ToTensor(), ToTorchImage(channels_last=True)]
        )
        try:
            loader = Loader(
                str(self.path), batch_size=batch_size, num_workers=self.num_workers, os_cache=self.os_cache,
                order=OrderOption.SEQUENTIAL, pipelines=pipelines, drop_last=False,
                batches_ahead=self.batches_ahead, seed=0,
            )
        except Exception as exc:
            raise LabelStoreError(f"FFCV cannot load {self.path} ({type(exc).__name__}: {exc}); rewrite it with write_beton") from None
        if self.layers > 1:  # virtual id k*N + i reads image i's metadata row (the same bytes)
            tiled = np.tile(loader.reader.metadata, self.layers)
            tiled.setflags(write=False)  # same numba type as FFCV's own (read-only) table
            loader.reader.metadata = tiled
        return loader, params

    def _field_names(self) -> list[str]:
        from ffcv.reader import Reader

        return list(Reader(str(self.path)).field_names)

    # -- checks -----------------------------------------------------------------------------
    def _check(self, cb: CropBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx, boxes, flips = check_crop_batch(cb, self.image_sizes)
        return idx, boxes.astype(np.int32), flips

    # -- the PixelBackend contract ------------------------------------------------------------
    def iter_batches(self, batches: Sequence[CropBatch], size: tuple[int, int]) -> Iterator[torch.Tensor]:
        """Yield uint8 ``(n, 3, H, W)`` per CropBatch, in order (see ``loaders.backend``)."""
        H, W = (int(s) for s in size)
        if H < 1 or W < 1:
            raise LabelStoreError(f"the output size must be positive, got {size}")
        records = [self._check(cb) for cb in batches]
        lengths = [len(r[0]) for r in records]
        if not any(lengths):
            for _ in records:
                yield torch.empty(0, 3, H, W, dtype=torch.uint8)
            return
        bs = max(lengths)
        larger = sorted(b for (h, w, b) in self._loaders if (h, w) == (H, W) and b > bs)
        if (H, W, bs) not in self._loaders and larger and sum(map(bool, lengths)) <= 2:
            bs = larger[0]  # e.g. an epoch's short last batch alone: one pass per batch beats compiling
        loader, params = self._loader(H, W, bs)
        next_b = 0  # the next CropBatch to yield; pieces complete their batches in order
        partial: dict[int, list] = {}  # a split CropBatch being assembled: [tensor, rows missing]
        for segment in plan_segments(batches, bs, self.num_images, self.layers):
            for piece in segment:
                _, boxes, flips = records[piece.batch]
                params.set(piece.vids, boxes[piece.rows], flips[piece.rows])
            ids = np.concatenate([p.vids for p in segment]).astype(np.uint64)
            loader.indices = ids
            loader.traversal_order.indices = ids
            loader.first_traversal_order = ids  # Loader.__len__ reads it
            self.passes += 1
            token = params.owner = object()  # detects another pass on this Loader while ours runs
            it = iter(loader)  # prefetching starts here: the parameters are already in place
            try:
                for piece in segment:
                    (images,) = next(it)
                    if params.owner is not token:
                        raise LabelStoreError(
                            "two iter_batches() generators of one FFCVBackend (same output size) were interleaved; "
                            "they share FFCV's parameter table: finish or close one before starting the next"
                        )
                    n = lengths[piece.batch]
                    if len(piece.rows) == n:  # the usual case: a whole CropBatch in one FFCV batch
                        out = images.clone() if self.copy else images
                    else:
                        slot = partial.setdefault(piece.batch, [torch.empty(n, 3, H, W, dtype=torch.uint8), n])
                        slot[0][torch.as_tensor(piece.rows)] = images
                        slot[1] -= len(piece.rows)
                        if slot[1]:
                            continue
                        out = partial.pop(piece.batch)[0]
                    while next_b < piece.batch:  # empty CropBatches before this one
                        yield torch.empty(0, 3, H, W, dtype=torch.uint8)
                        next_b += 1
                    yield out
                    next_b += 1
            finally:
                it.close()
        while next_b < len(records):
            yield torch.empty(0, 3, H, W, dtype=torch.uint8)
            next_b += 1
