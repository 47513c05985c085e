"""Opening a label file: the checks that run before anything is read (user block, root
attributes, dataset structure, the epoch table), as pure functions of the file."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ._format import (
    CHUNK_DTYPE, DERIVED, EPOCH_DTYPE, EPOCH_DTYPE_V1, EXPLICIT, FORMAT_NAME, SUPPORTED_VERSIONS, USERBLOCK_DTYPE,
    USERBLOCK_MAGIC,
)
from .errors import LabelStoreError


def check_userblock(path: Path) -> int:
    """Our user-block header: magic, version and file size checked; returns the whole-file crc32 it holds."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(USERBLOCK_DTYPE.itemsize)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise LabelStoreError(f"no label file at {path}") from None
    except OSError as exc:
        raise LabelStoreError(f"cannot read {path}: {exc.strerror}") from None
    if Path(str(path) + ".partial").exists() and len(raw) < USERBLOCK_DTYPE.itemsize:
        raise LabelStoreError(f"{path} is not finalized yet: resume the writer and finalize it")
    if len(raw) < USERBLOCK_DTYPE.itemsize or raw[:16] != USERBLOCK_MAGIC:
        raise LabelStoreError(f"{path} is not a labelstore label file (bad magic; truncated or another format)")
    head = np.frombuffer(raw, USERBLOCK_DTYPE)[0]
    if int(head["version"]) not in SUPPORTED_VERSIONS:
        raise LabelStoreError(
            f"{path} has format version {int(head['version'])}; this labelstore-kit reads "
            f"{list(SUPPORTED_VERSIONS)}: upgrade labelstore-kit"
        )
    if int(head["file_size"]) != size:
        raise LabelStoreError(
            f"{path} is truncated or was appended to ({size} bytes, header says {int(head['file_size'])}); "
            "restore it from a copy or rewrite it"
        )
    return int(head["crc32"])


def root_attributes(f: h5py.File) -> dict:
    """The root attributes as plain Python values (str, int, float)."""
    return {k: _plain(v) for k, v in f.attrs.items()}


def check_tables(f: h5py.File, attrs: dict, path: Path) -> np.ndarray:
    """Check the format name, version and dataset structure; return the epoch table in the
    current layout (format 1 tables gain ``num_stored``), checked for consistency."""
    if attrs.get("format") != FORMAT_NAME:
        raise LabelStoreError(f"{path} is an HDF5 file but not a labelstore label file")
    version = int(attrs["format_version"])
    if version not in SUPPORTED_VERSIONS:
        raise LabelStoreError(f"{path} has format version {version}; this labelstore-kit reads "
                              f"{list(SUPPORTED_VERSIONS)}: upgrade labelstore-kit")
    _check_structure(f, attrs, path)
    t, n = _epoch_table(f["epochs"][...]), int(attrs["num_images"])
    bs = np.maximum(t["batch_size"].astype(np.int64), 1)
    if (t["batch_size"] < 1).any() or (t["num_batches"] != -(-n // bs)).any() or (t["num_stored"] > t["num_batches"]).any() \
            or (t["first_chunk"] != np.concatenate([[0], np.cumsum(t["num_stored"])[:-1]])).any():
        raise LabelStoreError(f"{path}: the epoch table is inconsistent (corrupted); run `labelstore verify`")
    return t


def _check_structure(f: h5py.File, attrs: dict, path: Path) -> None:
    """Datasets present with the dtypes and shapes the format says: cheap, metadata only."""
    def bad(what: str):
        return LabelStoreError(f"{path}: {what} (the file is corrupted or not written by labelstore); run `labelstore verify`")

    epoch_dtype = EPOCH_DTYPE_V1 if int(attrs["format_version"]) == 1 else EPOCH_DTYPE
    for name, dtype in (("epochs", epoch_dtype), ("chunks", CHUNK_DTYPE)):
        if name not in f or not isinstance(f[name], h5py.Dataset) or f[name].dtype != dtype or f[name].ndim != 1:
            raise bad(f"/{name} is missing or malformed")
    if "data" not in f or f["data"].dtype != np.uint8 or f["data"].ndim != 1:
        raise bad("/data is missing or malformed")
    epochs = f["epochs"]
    stored = epochs["num_stored"] if "num_stored" in epoch_dtype.names else epochs["num_batches"]
    if f["chunks"].shape[0] != int(stored.sum(dtype=np.int64)):
        raise bad("the chunk table does not match the epoch table")
    n = int(attrs["num_images"])
    if attrs.get("orders") == EXPLICIT and ("orders" not in f or f["orders"].shape != (len(epochs), n)):
        raise bad("/orders is missing or has the wrong shape")
    if "image_sizes" in f and f["image_sizes"].shape != (n, 2):
        raise bad("/image_sizes has the wrong shape")
    if attrs.get("crops") == DERIVED and "image_sizes" not in f:
        raise bad("derived crops need /image_sizes, which is missing")


def _epoch_table(rows: np.ndarray) -> np.ndarray:
    """The epoch table in the current layout (a format-1 table gains num_stored = num_batches)."""
    if "num_stored" in rows.dtype.names:
        return rows
    out = np.zeros(len(rows), EPOCH_DTYPE)
    for name in rows.dtype.names:
        out[name] = rows[name]
    out["num_stored"] = rows["num_batches"]
    return out


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v
