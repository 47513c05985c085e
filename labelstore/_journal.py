"""The append-only journal a writer keeps until finalize: what makes writes resumable.

A partial label set is a directory ``<file>.partial/`` holding ``header.json`` (the
writer's settings), ``arrays.npz`` (codec arrays, image sizes) and ``journal.bin``: a
sequence of framed records, each with its own crc32. A process killed mid-append leaves at
most one torn frame at the end, which the next open cuts off; every complete frame is kept.
"""
from __future__ import annotations

import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LabelStoreError

_MAGIC = b"LSJ1"
_FRAME = struct.Struct("<4sBxxxQI")  # magic, kind, pad, payload length, crc32(payload)
KIND_EPOCH = 1
KIND_BATCH = 2
KIND_PRESENT = 3  # the batches a partial epoch will hold (absent: all of them)
_EPOCH = struct.Struct("<IIB")  # epoch, batch_size, has_order
_BATCH = struct.Struct("<IIIIII")  # epoch, batch, n, label/crop/mix nbytes


@dataclass
class BatchEntry:
    epoch: int
    batch: int
    num_records: int
    label_nbytes: int
    crop_nbytes: int
    mix_nbytes: int
    offset: int  # of the label section inside journal.bin


class Journal:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.log_path = self.dir / "journal.bin"
        self._fh = None

    # -- creation and loading -----------------------------------------------------------
    def create(self, header: dict, arrays: dict[str, np.ndarray]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        np.savez(self.dir / "arrays.npz", **arrays)
        tmp = self.dir / "header.json.tmp"
        tmp.write_text(json.dumps(header, sort_keys=True, indent=1))
        os.replace(tmp, self.dir / "header.json")  # header last: its presence marks a usable dir
        self.log_path.touch()

    def rewrite_header(self, header: dict) -> None:
        """Replace header.json atomically (settings completed before the first batch)."""
        tmp = self.dir / "header.json.tmp"
        tmp.write_text(json.dumps(header, sort_keys=True, indent=1))
        os.replace(tmp, self.dir / "header.json")

    def exists(self) -> bool:
        return (self.dir / "header.json").exists()

    def read_header(self) -> tuple[dict, dict[str, np.ndarray]]:
        try:
            header = json.loads((self.dir / "header.json").read_text())
            with np.load(self.dir / "arrays.npz") as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise LabelStoreError(
                f"the partial label set {self.dir} is unreadable ({exc}); delete that directory to start over"
            ) from None
        return header, arrays

    def scan(self) -> tuple[dict[int, tuple[int, np.ndarray | None]], list[BatchEntry], dict[int, np.ndarray]]:
        """Read every complete frame; cut a torn tail. Returns epochs, batch entries and the
        declared batches of partial epochs."""
        epochs: dict[int, tuple[int, np.ndarray | None]] = {}
        batches: list[BatchEntry] = []
        present: dict[int, np.ndarray] = {}
        good_end = 0
        with open(self.log_path, "rb") as fh:
            data_len = os.fstat(fh.fileno()).st_size
            pos = 0
            while pos + _FRAME.size <= data_len:
                fh.seek(pos)
                magic, kind, length, crc = _FRAME.unpack(fh.read(_FRAME.size))
                if magic != _MAGIC or pos + _FRAME.size + length > data_len:
                    break
                payload = fh.read(length)
                if zlib.crc32(payload) != crc:
                    break
                body = pos + _FRAME.size
                if kind == KIND_EPOCH:
                    e, bs, has_order = _EPOCH.unpack_from(payload)
                    order = np.frombuffer(payload, "<u4", offset=_EPOCH.size).astype(np.int64) if has_order else None
                    epochs[e] = (bs, order)
                elif kind == KIND_BATCH:
                    e, b, n, ln, cn, mn = _BATCH.unpack_from(payload)
                    batches.append(BatchEntry(e, b, n, ln, cn, mn, body + _BATCH.size))
                elif kind == KIND_PRESENT:
                    (e,) = struct.unpack_from("<I", payload)
                    present[e] = np.frombuffer(payload, "<u4", offset=4).astype(np.int64)
                else:
                    break
                pos = body + length
                good_end = pos
        if good_end != data_len:  # torn or garbage tail from a killed writer: drop it
            with open(self.log_path, "r+b") as fh:
                fh.truncate(good_end)
        return epochs, batches, present

    # -- appending ----------------------------------------------------------------------
    def _append(self, kind: int, payload: bytes) -> int:
        if self._fh is None:
            self._fh = os.open(self.log_path, os.O_WRONLY | os.O_APPEND)
        pos = os.lseek(self._fh, 0, os.SEEK_END)
        frame = memoryview(_FRAME.pack(_MAGIC, kind, len(payload), zlib.crc32(payload)) + payload)
        try:
            # unbuffered: once this returns, the frame is in the OS and survives a killed process
            while frame:
                frame = frame[os.write(self._fh, frame):]
        except OSError as exc:
            # e.g. a full disk: drop the torn frame so what was written before stays valid
            try:
                os.ftruncate(self._fh, pos)
            except OSError:
                pass  # the next open's scan cuts the torn frame instead
            raise LabelStoreError(
                f"could not append to {self.log_path} ({exc.strerror or exc}); free space and "
                "run the same command again: it resumes from the last complete batch"
            ) from None
        return pos + _FRAME.size

    def append_epoch(self, epoch: int, batch_size: int, order: np.ndarray | None) -> None:
        payload = _EPOCH.pack(epoch, batch_size, order is not None)
        if order is not None:
            payload += np.asarray(order, "<u4").tobytes()
        self._append(KIND_EPOCH, payload)

    def append_present(self, epoch: int, batches: np.ndarray) -> None:
        self._append(KIND_PRESENT, struct.pack("<I", epoch) + np.asarray(batches, "<u4").tobytes())

    def append_batch(self, epoch: int, batch: int, n: int, label: bytes, crop: bytes, mix: bytes) -> BatchEntry:
        head = _BATCH.pack(epoch, batch, n, len(label), len(crop), len(mix))
        body = self._append(KIND_BATCH, head + label + crop + mix)
        return BatchEntry(epoch, batch, n, len(label), len(crop), len(mix), body + _BATCH.size)

    def read_chunk(self, entry: BatchEntry) -> bytes:
        with open(self.log_path, "rb") as fh:
            fh.seek(entry.offset)
            return fh.read(entry.label_nbytes + entry.crop_nbytes + entry.mix_nbytes)

    def mark_done(self) -> None:
        """A shard's journal is complete (all of its rank's batches are written)."""
        (self.dir / "DONE").touch()

    def is_done(self) -> bool:
        return (self.dir / "DONE").exists()

    def sync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh)

    def close(self) -> None:
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None


def journal_dir(path: Path, shard: tuple[int, int] | None = None) -> Path:
    """Where the journal of ``path`` lives: ``<file>.partial/``, or one rank's ``<file>.shards/rank<r>of<w>/``."""
    if shard is None:
        return path.with_name(path.name + ".partial")
    return path.with_name(path.name + ".shards") / f"rank{shard[0]}of{shard[1]}"


_SHARD_DIR = re.compile(r"rank(\d+)of(\d+)$")


def shard_dirs(path: Path) -> list[tuple[Path, int, int]]:
    """The shard journals of ``path`` (``<file>.shards/rank<r>of<w>/``) as (folder, rank, world size)."""
    root = path.with_name(path.name + ".shards")
    if not root.is_dir():
        return []
    return [(d, int(m.group(1)), int(m.group(2))) for d in sorted(root.glob("rank*of*"))
            if d.is_dir() and (m := _SHARD_DIR.search(d.name))]
