"""The device-resident pixel backend: the whole image set as uint8 on the GPU (or CPU), batches cut there.

A distilled set fits in one GPU (ImageNet-1K at 10 images per class: 1.5 GB as uint8 at
224 px). :class:`DeviceBackend` uploads it once and yields every batch already on the
device: the batch's crop windows are gathered from the resident images in one indexing
call, then resized and flipped by two batched passes (``loaders.device_resample``); the CPU
only plans crops and reads labels. CutMix and normalisation stay in
``loaders.mixing.to_model_input``, shared by record and replay.

Storage: one uint8 canvas ``(Y, X, C)`` per set, each image at an offset ``(v, u)``: a set of
one size is the stack ``(N, H, W, C)`` (an ``(N, C, H, W)`` tensor in channels-last memory,
uploaded as is), a set of many sizes is shelf-packed, with no padding of every image to the
largest size. Gray sets keep one channel, replicated to three on output. With
``storage="host"`` the canvas stays in (pinned) host memory and each batch's crop windows
are copied to the device.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from labelstore import LabelStoreError

from .backend import CropBatch, check_crop_batch
from .device_resample import INTERPOLATION, Tables, native_resize, resample_windows
from .images import ImageSource, as_image_source, check_labels

STORAGES = ("device", "host", "auto")
ENGINES = ("batched", "native")
_GIB = float(1 << 30)


def _gib(n: float | None) -> str:
    if n is None:
        return "an unknown amount"
    return f"{n / _GIB:.2f} GiB" if n >= _GIB / 2 else f"{n / (1 << 20):.1f} MiB"


def _free_bytes(device: torch.device) -> tuple[int | None, int | None]:
    """(free, total) bytes of the device's memory, or of host RAM for the CPU (None when unknown)."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        kib = lambda k: int(info[k].strip().split()[0]) * 1024  # noqa: E731
        return kib("MemAvailable"), kib("MemTotal")
    except (OSError, KeyError, ValueError):
        return None, None


def _pack(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Canvas offsets (u = x, v = y) and canvas width, height for images of ``sizes`` (h, w)."""
    h, w = sizes[:, 0], sizes[:, 1]
    n = len(sizes)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 1, 1
    if (h == h[0]).all() and (w == w[0]).all():  # the (N, H, W, C) stack: one image below the other
        return np.zeros(n, np.int64), np.arange(n, dtype=np.int64) * h[0], int(w[0]), int(n * h[0])
    width = int(max(w.max(), np.ceil(np.sqrt(float((h * w).sum())))))
    u, v = np.zeros(n, np.int64), np.zeros(n, np.int64)
    x = y = shelf = 0
    for i in np.argsort(-h, kind="stable"):  # tallest first: each shelf is as tall as its first image
        if x + w[i] > width:
            x, y, shelf = 0, y + shelf, 0
        u[i], v[i] = x, y
        x += int(w[i])
        shelf = max(shelf, int(h[i]))
    return u, v, width, int(y + shelf)


class DeviceBackend:
    """PixelBackend holding the image set as uint8 on ``device``; batches come out on that device.

    ``images``: anything ``loaders.images`` reads (uint8 array, list of arrays, image folder,
    dataset of ``(image, label)``) or a ``.beton`` written by ``loaders.write_beton`` (read
    with numpy alone: FFCV need not be installed). ``storage``: ``"device"`` (refuses, saying
    how much is needed and free, when the set does not fit), ``"host"`` (pinned host memory,
    windows copied per batch) or ``"auto"``. ``reserve_bytes``: device memory left free for
    the model and the per-batch buffers. ``engine``: ``"batched"`` (two embedding_bag passes
    per batch; the only engine on CUDA) or ``"native"`` (torch's own uint8 resize per crop,
    the CPU default: faster there, the same pixels).
    """

    def __init__(self, images: Any, labels: Sequence[int] | None = None, *, device: torch.device | str | None = None,
                 storage: str = "device", reserve_bytes: int | None = None, engine: str | None = None):
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if storage not in STORAGES:
            raise LabelStoreError(f"storage must be one of {STORAGES}, got {storage!r}")
        engine = engine or ("native" if self.device.type == "cpu" else "batched")
        if engine not in ENGINES or (engine == "native" and self.device.type != "cpu"):
            raise LabelStoreError(f"engine must be 'batched' (any device) or 'native' (CPU only), got {engine!r} "
                                  f"on {self.device}")
        self.engine = engine
        is_beton = isinstance(images, (str, Path)) and str(images).endswith(".beton")
        src = BetonSource(images) if is_beton else as_image_source(images, labels)
        if is_beton and labels is not None:
            src.labels = check_labels(labels, src.num_images)
        self._source_note = getattr(src, "note", "")
        self.source: ImageSource = src
        self.num_images = int(src.num_images)
        self.image_sizes = np.asarray(src.image_sizes, np.int64).reshape(-1, 2)
        self._u, self._v, X, Y = _pack(self.image_sizes)
        self.channels = self._channels(src)
        self.nbytes = self.channels * X * Y
        self._reserve = reserve_bytes
        self.storage = self._place(storage, self.nbytes, reserve_bytes)
        self._canvas = self._upload(src, X, Y)
        self._tables = Tables(self.device, int(self.image_sizes.max()) if self.num_images else 1)

    # -- what the backend is ---------------------------------------------------------------
    @property
    def fingerprint(self) -> str | None:
        return self.source.fingerprint

    @property
    def labels(self) -> np.ndarray | None:
        return self.source.labels

    @property
    def pixel_path(self) -> dict[str, str]:
        """Recorded in label files (loaders.contract). The device type is part of it: the arithmetic is exact
        integer arithmetic, but CPU and CUDA pixels are only promised equal once measured on each machine."""
        return {"backend": f"device:{self.device.type}", "interpolation": INTERPOLATION + self._source_note}

    def __repr__(self) -> str:
        return (f"<DeviceBackend {self.num_images} images, {self.channels} channel(s), {_gib(self.nbytes)} on "
                f"{'host for ' if self.storage == 'host' else ''}{self.device}, engine {self.engine}>")

    # -- building the canvas ---------------------------------------------------------------
    @staticmethod
    def _channels(src: ImageSource) -> int:
        """1 for a gray set, else 3; read from the array or sidecar, else from the first image (a later colour
        image widens the canvas)."""
        arr = getattr(src, "images", None)
        if isinstance(arr, np.ndarray) and arr.ndim in (3, 4):
            return 1 if arr.ndim == 3 or arr.shape[-1] == 1 else 3
        if getattr(src, "channels", None) is not None:
            return int(src.channels)
        first = np.asarray(src.get(0)) if src.num_images else np.zeros((1, 1), np.uint8)
        return 1 if first.ndim == 2 or first.shape[-1] == 1 else 3

    def _place(self, storage: str, nbytes: int, reserve: int | None) -> str:
        """Where the canvas lives; refuses, with the numbers, a set that does not fit."""
        if self.device.type == "cpu" and storage == "auto":
            storage = "device"  # the same memory ("host" on the CPU still runs the host code path)
        target = self.device if storage in ("device", "auto") else torch.device("cpu")
        free, total = _free_bytes(target)
        if reserve is None:
            reserve = max(1 << 30, (total or 0) // 20) if target.type == "cuda" else 1 << 29
        fits = free is None or nbytes + int(reserve) <= free
        if fits:
            return "host" if storage == "host" else "device"
        if storage == "auto" and target.type == "cuda":
            hfree, _ = _free_bytes(torch.device("cpu"))
            if hfree is None or nbytes + (1 << 29) <= hfree:
                warnings.warn(f"the image set ({_gib(nbytes)}) does not fit in {target} ({_gib(free)} free): keeping "
                              "it in pinned host memory and copying each batch's crop windows", stacklevel=3)
                return "host"
        where = "host memory" if target.type == "cpu" else str(target)
        raise LabelStoreError(
            f"the image set does not fit: {self.num_images} images as uint8 ({self.channels} channel(s)) need "
            f"{_gib(nbytes)} in {where}, where {_gib(free)} are free and {_gib(reserve)} are kept for the model and "
            "the per-batch buffers (reserve_bytes=); "
            + ("pass storage='host' to keep the images in pinned host memory and crop on the device, "
               if target.type == "cuda" else "")
            + "or use fewer or smaller images")

    def _upload(self, src: ImageSource, X: int, Y: int) -> torch.Tensor:
        host = self.storage == "host"
        where = torch.device("cpu") if host else self.device
        pin = host and self.device.type == "cuda"
        try:
            arr = getattr(src, "images", None)
            stacked = isinstance(arr, np.ndarray) and arr.ndim in (3, 4) and X == arr.shape[2]
            alloc = torch.empty if stacked else torch.zeros  # a packed canvas has gaps (read with weight 0 only)
            canvas = alloc((Y, X, self.channels), dtype=torch.uint8, device=where, pin_memory=pin)
            if stacked:  # the (N, H, W, C) stack, copied as is
                stack = canvas.view(len(arr), arr.shape[1], X, self.channels)
                step = max(1, (64 << 20) // max(1, arr[0].nbytes))  # ~64 MB per copy, no full-size temporary
                for a in range(0, len(arr), step):
                    t = torch.from_numpy(np.ascontiguousarray(arr[a : a + step]))
                    stack[a : a + len(t)] = (t[..., None] if t.ndim == 3 else t[..., : self.channels]).to(where)
                return canvas
            for i in range(src.num_images):
                img = np.asarray(src.get(i))
                img = img[:, :, None] if img.ndim == 2 else img[:, :, :3]
                if img.shape[2] == 3 and self.channels == 1:  # a colour image in a set that began gray
                    self.channels, self.nbytes = 3, 3 * X * Y
                    self._place("host" if host else "device", self.nbytes - X * Y, self._reserve)
                    wide = torch.empty((Y, X, 3), dtype=torch.uint8, device=where, pin_memory=pin)
                    canvas = wide.copy_(canvas.expand(Y, X, 3))
                h, w = img.shape[:2]
                t = torch.from_numpy(np.require(img, requirements=["C", "W"])).to(where)
                canvas[self._v[i] : self._v[i] + h, self._u[i] : self._u[i] + w] = t.expand(h, w, self.channels)
            return canvas
        except torch.OutOfMemoryError:
            raise LabelStoreError(f"the device ran out of memory while uploading {_gib(self.nbytes)} of images to "
                                  f"{where}; pass storage='host' or free device memory") from None

    # -- the PixelBackend contract -----------------------------------------------------------
    def iter_batches(self, batches: Sequence[CropBatch], size: tuple[int, int]) -> Iterator[torch.Tensor]:
        """Yield uint8 ``(n, 3, H, W)`` on ``self.device`` per CropBatch, in order (see ``loaders.backend``)."""
        H, W = (int(s) for s in size)
        if H < 1 or W < 1:
            raise LabelStoreError(f"the output size must be positive, got {size}")
        for cb in batches:
            idx, boxes, flips = check_crop_batch(cb, self.image_sizes)
            if len(idx) == 0:
                yield torch.empty(0, 3, H, W, dtype=torch.uint8, device=self.device)
                continue
            out = (self._native if self.engine == "native" else self._batched)(idx, boxes, flips, (H, W))
            yield out.expand(-1, 3, -1, -1).contiguous() if out.shape[1] == 1 else out

    def pixels(self, crop_batch: CropBatch, size: tuple[int, int]) -> torch.Tensor:
        """The pixels of one CropBatch (``iter_batches`` for a single batch)."""
        return next(iter(self.iter_batches([crop_batch], size)))

    def _batched(self, idx: np.ndarray, boxes: np.ndarray, flips: np.ndarray, size) -> torch.Tensor:
        canvas, dev = self._canvas, self.device
        Y, X, C = canvas.shape
        hb, wb = int(boxes[:, 2].max()), int(boxes[:, 3].max())
        v0, u0 = self._v[idx] + boxes[:, 0], self._u[idx] + boxes[:, 1]  # each crop's top-left on the canvas
        # window origins, crop heights and widths, flips: one small host->device copy per batch
        meta = torch.from_numpy(np.stack([v0, u0, boxes[:, 2], boxes[:, 3], flips.astype(np.int64)], 1))
        if self.storage == "host":  # slices into one pinned buffer, then one copy to the device
            win = torch.empty((len(idx), hb, wb, C), dtype=torch.uint8, pin_memory=dev.type == "cuda")
            for k, (v, u, (_, _, h, w)) in enumerate(zip(v0, u0, boxes)):
                win[k, :h, :w] = canvas[v : v + h, u : u + w]
            windows, m = win.to(dev, non_blocking=True), meta.to(dev)
        else:
            m = (meta.pin_memory() if dev.type == "cuda" else meta).to(dev, non_blocking=True)
            rows = torch.clamp(m[:, 0:1] + torch.arange(hb, device=dev), max=Y - 1)
            cols = torch.clamp(m[:, 1:2] + torch.arange(wb, device=dev), max=X - 1)
            windows = canvas[rows[:, :, None], cols[:, None, :]]  # the batch's crop windows in one gather
        return resample_windows(windows, boxes[:, 2], boxes[:, 3], m[:, 2], m[:, 3], m[:, 4].bool(), size,
                                self._tables)

    def _native(self, idx: np.ndarray, boxes: np.ndarray, flips: np.ndarray, size) -> torch.Tensor:
        out = torch.empty(len(idx), self.channels, *size, dtype=torch.uint8)
        for k, (i, (t, l, h, w), f) in enumerate(zip(idx, boxes, flips)):
            v, u = self._v[i] + t, self._u[i] + l
            r = native_resize(self._canvas[v : v + h, u : u + w].permute(2, 0, 1), size)  # a channels-last view
            out[k] = r.flip(-1) if f else r
        return out

    def close(self) -> None:
        """Release the images (the memory goes back to torch's allocator)."""
        self._canvas = torch.empty((0, 0, self.channels), dtype=torch.uint8)


# -- a .beton read with numpy alone (the GPU machine need not have FFCV) -----------------------------
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                    ("alloc_table_ptr", "<u8")], align=True)
_FIELD = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
_ALLOC = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
_COLUMNS = {0: np.dtype("<f8"), 1: np.dtype("<i8"),  # FloatField, IntField, RGBImageField metadata
            2: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")])}


class BetonSource(ImageSource):
    """The images of a ``.beton`` (FFCV file layout, ``reference/ffcv-notes.md``) and its sidecar, via numpy.

    Raw images are the stored bytes; JPEG ones are decoded with PIL (their pixels may differ
    from FFCV's libjpeg-turbo decode, so the pixel path says so). A gray set (sidecar
    ``channels`` 1) in a raw beton keeps one channel, as it was given.
    """

    def __init__(self, path: str | Path):
        from .beton import SIDECAR_FORMAT, SIDECAR_VERSION, sidecar_paths

        self.path = Path(path)
        if not self.path.is_file():
            raise LabelStoreError(f"no .beton at {self.path}; write one with loaders.write_beton(images, {str(path)!r})")
        try:
            self._data = np.memmap(self.path, np.uint8, "r")
            head = np.frombuffer(self._data, _HEADER, 1)[0]
            fields = np.frombuffer(self._data, _FIELD, int(head["num_fields"]), _HEADER.itemsize)
            types = [int(t) for t in fields["type_id"]]
            names = [bytes(f).split(b"\0")[0].decode() for f in fields["name"]]
            if int(head["version"]) != 2 or any(t not in _COLUMNS for t in types) or 2 not in types:
                raise ValueError(f"version {int(head['version'])}, field types {types}")
            md_type = np.dtype([("", _COLUMNS[t]) for t in types], align=True)
            n = int(head["num_samples"])
            self._meta = np.frombuffer(self._data, md_type, n, _HEADER.itemsize + fields.nbytes)
            alloc = np.frombuffer(self._data, _ALLOC, offset=int(head["alloc_table_ptr"]))
        except (ValueError, IndexError, TypeError) as exc:
            raise LabelStoreError(f"{self.path} is not a .beton this reader knows ({exc}); rewrite it with "
                                  "loaders.write_beton") from None
        col = f"f{names.index('image') if 'image' in names else types.index(2)}"
        self._img = self._meta[col]
        order = np.argsort(alloc["ptr"])
        self._ptrs, self._sizes = alloc["ptr"][order], alloc["size"][order]
        self.num_images = n
        self._image_sizes = np.stack([self._img["height"], self._img["width"]], 1).astype(np.int64)
        lab = [f"f{i}" for i, t in enumerate(types) if t == 1]
        self.labels = self._meta[lab[0]].astype(np.int64) if lab else None
        self._fingerprint, self.channels, modes = None, None, set(np.unique(self._img["mode"]).tolist())
        jpath, npath = sidecar_paths(self.path)
        if jpath.exists():
            try:
                meta = json.loads(jpath.read_text())
                with np.load(npath) as z:
                    sizes = z["image_sizes"].astype(np.int64)
                    labels = z["labels"].astype(np.int64) if "labels" in z else None
            except Exception as exc:
                raise LabelStoreError(f"the sidecar of {self.path} is unreadable ({exc}); rewrite the beton "
                                      "with loaders.write_beton") from None
            if meta.get("format") != SIDECAR_FORMAT or int(meta.get("version", 0)) > SIDECAR_VERSION or (
                    meta["num_images"] != n or meta["beton_bytes"] != self.path.stat().st_size
                    or not np.array_equal(sizes, self._image_sizes)):
                raise LabelStoreError(f"the sidecar {jpath.name} does not describe {self.path.name}: the beton was "
                                      "replaced or modified; rewrite both with loaders.write_beton")
            self._fingerprint, self.labels = meta["image_fingerprint"], labels
            self.channels = 1 if meta.get("channels") == 1 and modes == {1} else None
        self.note = "" if modes == {1} else "; images decoded from a JPEG beton with PIL"

    @property
    def image_sizes(self) -> np.ndarray:  # type: ignore[override]
        return self._image_sizes

    @property
    def fingerprint(self) -> str | None:  # type: ignore[override]
        return self._fingerprint

    def get(self, i: int) -> np.ndarray:
        rec = self._img[int(i)]
        h, w, ptr = int(rec["height"]), int(rec["width"]), int(rec["data_ptr"])
        if int(rec["mode"]) == 1:  # raw
            img = np.array(self._data[ptr : ptr + h * w * 3]).reshape(h, w, 3)  # a copy: the map is read-only
        else:
            import io

            from PIL import Image

            size = int(self._sizes[np.searchsorted(self._ptrs, ptr)])
            with Image.open(io.BytesIO(self._data[ptr : ptr + size].tobytes())) as im:
                img = np.asarray(im.convert("RGB"))
        return img[:, :, 0] if self.channels == 1 else img
