"""Finalize: turn a complete journal into the HDF5 label file, atomically."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import zlib
from pathlib import Path

import h5py
import numpy as np

from ._format import (
    CHUNK_DTYPE,
    EPOCH_DTYPE,
    EXPLICIT,
    FORMAT_NAME,
    FORMAT_VERSION,
    HDF5_LIBVER,
    LABELSTORE_VERSION,
    USERBLOCK_DTYPE,
    USERBLOCK_MAGIC,
    USERBLOCK_SIZE,
)
from .errors import LabelStoreError

# Root attributes covered by the metadata checksum (docs/format.md lists them).
META_KEYS = (
    "format", "format_version", "num_classes", "num_images", "seed", "image_fingerprint",
    "crops", "orders", "mix", "crop_policy", "mix_policy", "source", "source_temperature",
    "teacher", "codec", "user_attrs", "created", "labelstore_version",
)
META_KEYS_ADDED = {2: ("pixels",)}  # keys a format version added to the checksummed set


def meta_keys(version: int) -> tuple[str, ...]:
    return META_KEYS + tuple(k for v, keys in META_KEYS_ADDED.items() if version >= v for k in keys)


def meta_crc32(meta: dict) -> int:
    keys = meta_keys(int(meta.get("format_version", 1)))
    return zlib.crc32(json.dumps({k: meta[k] for k in keys}, sort_keys=True).encode())


def build_file(path: Path, header: dict, codec, image_sizes, epochs, entries, read_chunk, source_dir) -> None:
    """Write the finished file from journal ``entries`` ({(epoch, batch): BatchEntry}), atomically.

    ``read_chunk(entry)`` returns an entry's bytes; ``source_dir`` names the journal in messages.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove_stale_temps(path)
    need = sum(en.label_nbytes + en.crop_nbytes + en.mix_nbytes for en in entries.values())
    need += 64 * len(entries) + 4 * header["num_images"] * (len(epochs) + 2) + (1 << 16)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise LabelStoreError(
            f"not enough space to write {path}: about {need / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free; "
            f"the journal {source_dir} is intact: free space and finalize again"
        )
    try:
        _write_hdf5(tmp, header, codec, image_sizes, epochs, entries, read_chunk)
        _seal(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # h5py reports a failed write as either
        raise LabelStoreError(
            f"could not write {path} ({getattr(exc, 'strerror', None) or exc}); the journal {source_dir} is intact: "
            "free space and finalize again"
        ) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _remove_stale_temps(path: Path) -> None:
    """Drop temporary files left by finalizes that were killed (their process is gone)."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            os.kill(int(stale.name.rsplit("-", 1)[1]), 0)
        except (ValueError, ProcessLookupError):
            stale.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, someone else's


def _write_hdf5(tmp: Path, header, codec, image_sizes, epochs, entries, read_chunk) -> None:
    num_epochs = len(epochs)
    epoch_rows = np.zeros(num_epochs, EPOCH_DTYPE)
    order_keys = sorted(entries)
    chunk_rows = np.zeros(len(order_keys), CHUNK_DTYPE)
    stored = np.bincount(np.asarray([e for e, _ in order_keys], np.int64), minlength=num_epochs)
    first = 0
    for e in range(num_epochs):
        bs = epochs[e][0]
        nb = -(-header["num_images"] // bs)
        epoch_rows[e] = (bs, nb, first, stored[e])
        first += int(stored[e])
    offset = 0
    for i, key in enumerate(order_keys):
        en = entries[key]
        size = en.label_nbytes + en.crop_nbytes + en.mix_nbytes
        chunk_rows[i] = (en.epoch, en.batch, offset, en.num_records, en.label_nbytes, en.crop_nbytes, en.mix_nbytes, 0)
        offset += size

    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_classes": header["num_classes"],
        "num_images": header["num_images"],
        "seed": header["seed"],
        "image_fingerprint": header["image_fingerprint"],
        "crops": header["crops"],
        "orders": header["orders"],
        "mix": header["mix"],
        "crop_policy": json.dumps(header["crop_policy"], sort_keys=True),
        "mix_policy": json.dumps(header["mix_policy"], sort_keys=True),
        "source": header["source"],
        "source_temperature": float(header["source_temperature"] or 0.0),
        "teacher": json.dumps(header["teacher"], sort_keys=True),
        "codec": json.dumps(header["codec"], sort_keys=True),
        "user_attrs": json.dumps(header["attrs"], sort_keys=True),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "labelstore_version": LABELSTORE_VERSION,
        "pixels": json.dumps(header.get("pixels"), sort_keys=True),
    }
    with h5py.File(tmp, "w", userblock_size=USERBLOCK_SIZE, libver=HDF5_LIBVER) as f:
        for k, v in meta.items():
            f.attrs[k] = v
        f.attrs["meta_crc32"] = np.uint32(meta_crc32(meta))
        f.create_dataset("epochs", data=epoch_rows)
        data = f.create_dataset("data", shape=(offset,), dtype=np.uint8)  # contiguous: any range is one read
        pos = 0
        for i, key in enumerate(order_keys):
            blob = read_chunk(entries[key])
            chunk_rows[i]["crc32"] = zlib.crc32(blob)
            if blob:
                data[pos : pos + len(blob)] = np.frombuffer(blob, np.uint8)
            pos += len(blob)
        f.create_dataset("chunks", data=chunk_rows, chunks=(min(max(len(chunk_rows), 1), 4096),), fletcher32=True)
        if header["orders"] == EXPLICIT:
            orders = np.stack([epochs[e][1] for e in range(num_epochs)]).astype("<u4")
            f.create_dataset("orders", data=orders, chunks=(1, orders.shape[1]), fletcher32=True)
        if image_sizes is not None:
            # gzip: a fixed-size set's sizes are one repeated pair and shrink to almost nothing
            f.create_dataset("image_sizes", data=np.asarray(image_sizes, "<u4"), chunks=True, compression="gzip", shuffle=True, fletcher32=True)
        arrays = codec.get_arrays()
        if arrays:
            g = f.create_group("codec_arrays")
            for k, v in arrays.items():
                g.create_dataset(k, data=v, chunks=True, fletcher32=True)


def skeleton_nbytes(header: dict, codec_arrays: dict, image_sizes, epochs: dict, batches: list[tuple[int, int, int]]) -> int:
    """Bytes a finished file with these tables and codec arrays takes beyond its chunk data,
    measured by writing one with filler data (what the budget planner adds to the chunk bytes).

    ``batches``: (epoch, batch, records) of every stored chunk.
    """
    import tempfile

    from ._journal import BatchEntry

    per = max(64, -(-4096 // max(len(batches), 1)))  # filler: enough that HDF5 treats /data as large raw data
    entries = {(e, b): BatchEntry(e, b, n, per, 0, 0, 0) for e, b, n in batches}

    class _Arrays:  # the one codec method the file writer calls
        def get_arrays(self):
            return codec_arrays

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "skeleton.h5"
        _write_hdf5(path, header, _Arrays(), image_sizes, epochs, entries, lambda entry: bytes(entry.label_nbytes))
        _seal(path)
        return path.stat().st_size - per * len(entries)


def file_crc32(fh, head_without_crc: bytes) -> int:
    """crc32 of the user-block header (less its crc field) and every byte after the header."""
    crc = zlib.crc32(head_without_crc)
    fh.seek(USERBLOCK_DTYPE.itemsize)
    while block := fh.read(1 << 22):
        crc = zlib.crc32(block, crc)
    return crc


def _seal(tmp: Path) -> None:
    """Write our user-block header: magic, version, file size and the whole-file crc32."""
    size = tmp.stat().st_size
    head = np.zeros(1, USERBLOCK_DTYPE)
    head[0] = (USERBLOCK_MAGIC, FORMAT_VERSION, size, 0)
    with open(tmp, "r+b") as fh:
        head["crc32"] = file_crc32(fh, head.tobytes()[:-4])
        fh.seek(0)
        fh.write(head.tobytes())
        fh.flush()
        os.fsync(fh.fileno())
