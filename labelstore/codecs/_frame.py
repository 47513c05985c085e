"""Shared byte framing for all codecs: a zstd frame around a small header and typed streams.

Every encoded blob is one zstd frame (content size and checksum written) whose payload is::

    magic b"LSC" | format version u8 | codec tag u8 | n u32 | num_classes u32 | codec fields | streams

All integers little-endian. Streams follow each other with no length prefixes: their lengths
follow from the header. Multi-byte streams are byte-shuffled (all first bytes, then all
second bytes, ...) because zstd compresses the slowly varying high bytes far better apart.
"""
from __future__ import annotations

import struct
import threading

import numpy as np
import zstandard

from ..errors import LabelStoreError

MAGIC = b"LSC"
FORMAT_VERSION = 1
_COMMON = struct.Struct("<3sBBII")  # magic, version, codec tag, n, num_classes
# A frame that claims to hold more than this is corrupt (guards against huge allocations).
_MAX_PAYLOAD = 1 << 36

_local = threading.local()  # zstd contexts are not thread-safe and not picklable


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("cctx", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                write_content_size=True)
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "dctx"):
        _local.dctx = zstandard.ZstdDecompressor()
    return _local.dctx


def shuffle_bytes(arr: np.ndarray) -> bytes:
    """Little-endian bytes of ``arr`` with byte planes grouped (plane 0 of every item first)."""
    arr = np.ascontiguousarray(arr).reshape(-1)
    width = arr.dtype.itemsize
    if width == 1:
        return arr.tobytes()
    # shifts and masks on the unsigned view: ~10x faster than a strided byte transpose
    u = arr.view(f"u{width}")
    return b"".join(((u >> np.uint8(8 * j)) & 0xFF).astype(np.uint8).tobytes() for j in range(width))


def unshuffle_bytes(buf: memoryview | bytes, dtype: np.dtype, count: int) -> np.ndarray:
    """Inverse of :func:`shuffle_bytes`: ``count`` items of ``dtype`` (native byte order)."""
    dt = np.dtype(dtype).newbyteorder("=")
    raw = np.frombuffer(buf, np.uint8, count * dt.itemsize)
    if dt.itemsize == 1:
        return raw.view(dt)
    planes = raw.reshape(dt.itemsize, count)
    utype = np.dtype(f"u{dt.itemsize}")
    out = planes[-1].astype(utype)
    for j in range(dt.itemsize - 2, -1, -1):
        out <<= utype.type(8)
        out |= planes[j]
    return out.view(dt)


def smallest_uint(max_value: int) -> np.dtype:
    """Smallest of uint8/16/32 that holds ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise LabelStoreError(f"value {max_value} does not fit in 32 bits")


def smallest_int(lo: int, hi: int) -> np.dtype:
    """Smallest of int8/16/32 that holds ``[lo, hi]``."""
    for dt in (np.int8, np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise LabelStoreError(f"values in [{lo}, {hi}] do not fit in 32 bits")


def pack(tag: int, n: int, num_classes: int, fields: bytes, streams: list[bytes], level: int) -> bytes:
    """Header + streams, zstd-compressed into one self-contained frame."""
    payload = b"".join([_COMMON.pack(MAGIC, FORMAT_VERSION, tag, n, num_classes), fields, *streams])
    return _compressor(level).compress(payload)


def unpack(data: bytes, tag: int, num_classes: int, codec_id: str) -> tuple[int, memoryview]:
    """Decompress and check the common header; returns ``(n, rest)`` (codec fields + streams)."""
    try:
        size = zstandard.frame_content_size(data)
        if size < 0 or size > _MAX_PAYLOAD:
            raise LabelStoreError(f"{codec_id}: label chunk has no valid size in its zstd header")
        dobj = _decompressor().decompressobj()
        payload = dobj.decompress(data)
        if not dobj.eof or dobj.unused_data or len(payload) != size:
            raise LabelStoreError(f"{codec_id}: label chunk is truncated or has trailing bytes "
                                  "after its zstd frame; it is corrupt")
    except LabelStoreError:
        raise
    except (zstandard.ZstdError, TypeError, ValueError) as exc:
        raise LabelStoreError(
            f"{codec_id}: label chunk is corrupt or truncated ({exc}); re-create the file "
            "or restore it from a copy") from None
    if len(payload) < _COMMON.size:
        raise LabelStoreError(f"{codec_id}: label chunk is too short to hold a header")
    magic, version, got_tag, n, classes = _COMMON.unpack_from(payload)
    if magic != MAGIC:
        raise LabelStoreError(f"{codec_id}: not a labelstore label chunk (bad magic {magic!r})")
    if version > FORMAT_VERSION:
        raise LabelStoreError(f"{codec_id}: chunk format version {version} is newer than this "
                              f"labelstore-kit understands ({FORMAT_VERSION}); upgrade it")
    if got_tag != tag:
        raise LabelStoreError(f"{codec_id}: chunk was written by another codec (tag {got_tag}, "
                              f"expected {tag}); check the codec config stored with the data")
    if classes != num_classes:
        raise LabelStoreError(f"{codec_id}: chunk holds {classes} classes, codec expects "
                              f"{num_classes}")
    return n, memoryview(payload)[_COMMON.size:]


class Reader:
    """Sequential reader over the streams of one chunk that checks every length."""

    def __init__(self, buf: memoryview, codec_id: str):
        self.buf, self.pos, self.codec_id = buf, 0, codec_id

    def take(self, nbytes: int) -> memoryview:
        if nbytes < 0 or self.pos + nbytes > len(self.buf):
            raise LabelStoreError(f"{self.codec_id}: label chunk is truncated or its header is "
                                  "corrupt (a stream runs past the end)")
        out = self.buf[self.pos:self.pos + nbytes]
        self.pos += nbytes
        return out

    def struct(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.take(fmt.size))

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        dt = np.dtype(dtype)
        return unshuffle_bytes(self.take(count * dt.itemsize), dt, count)

    def finish(self) -> None:
        if self.pos != len(self.buf):
            raise LabelStoreError(f"{self.codec_id}: label chunk has {len(self.buf) - self.pos} "
                                  "unexpected trailing bytes; it is corrupt")


def dtype_code(dt: np.dtype) -> int:
    """One byte naming an integer dtype in a chunk header: kind ('u'/'i') and width."""
    dt = np.dtype(dt)
    return (0x80 if dt.kind == "i" else 0) | dt.itemsize


def dtype_from_code(code: int, codec_id: str) -> np.dtype:
    width, signed = code & 0x7F, bool(code & 0x80)
    if width not in (1, 2, 4):
        raise LabelStoreError(f"{codec_id}: corrupt chunk header (integer width {width})")
    return np.dtype(f"<{'i' if signed else 'u'}{width}")
