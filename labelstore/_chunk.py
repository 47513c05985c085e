"""Byte layout of the crop and mix sections of a chunk (the label section is the codec's).

Streams of one kind are grouped before zstd: all tops, then all lefts, heights, widths, then
the flip bits, so similar numbers sit together.
"""
from __future__ import annotations

import struct

import numpy as np
import zstandard

from .crops import Mix
from .errors import LabelStoreError

_ZSTD_LEVEL = 10
_MIX_KINDS = {"cutmix": 1, "mixup": 2}
_MIX_NAMES = {v: k for k, v in _MIX_KINDS.items()}


def _compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(raw)


def _decompress(data: bytes, what: str) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise LabelStoreError(f"corrupt {what} section ({exc}); run `labelstore verify` on the file") from None


def encode_crops(boxes: np.ndarray, flips: np.ndarray) -> bytes:
    """``boxes`` (n, 4) (top, left, height, width) and ``flips`` (n,) -> zstd bytes."""
    boxes = np.asarray(boxes)
    wide = boxes.size and int(boxes.max()) > 0xFFFF
    dtype = np.dtype("<u4" if wide else "<u2")
    raw = bytes([4 if wide else 2]) + np.ascontiguousarray(boxes.T, dtype=dtype).tobytes()
    raw += np.packbits(np.asarray(flips, bool), bitorder="little").tobytes()
    return _compress(raw)


def decode_crops(data: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = _decompress(data, "crop")
    width = raw[0] if raw else 0
    nbox = 4 * n * width
    if width not in (2, 4) or len(raw) != 1 + nbox + (n + 7) // 8:
        raise LabelStoreError("corrupt crop section (wrong length); run `labelstore verify` on the file")
    boxes = np.frombuffer(raw, dtype=f"<u{width}", count=4 * n, offset=1).reshape(4, n).T.astype(np.int32)
    flips = np.unpackbits(np.frombuffer(raw, np.uint8, offset=1 + nbox), count=n, bitorder="little").astype(bool)
    return boxes, flips


def encode_mix(mix: Mix | None) -> bytes:
    """One batch's mix -> zstd bytes; empty bytes when the batch is not mixed."""
    if mix is None:
        return b""
    n = len(mix.partner)
    wide = n > 0xFFFF
    head = struct.pack("<BBf4i", _MIX_KINDS[mix.kind], 4 if wide else 2, mix.lam, *map(int, mix.box))
    return _compress(head + np.asarray(mix.partner, "<u4" if wide else "<u2").tobytes())


def decode_mix(data: bytes, n: int) -> Mix | None:
    if not data:
        return None
    raw = _decompress(data, "mix")
    size = struct.calcsize("<BBf4i")
    if len(raw) < size:
        raise LabelStoreError("corrupt mix section (too short); run `labelstore verify` on the file")
    kind, width, lam, *box = struct.unpack_from("<BBf4i", raw)
    if kind not in _MIX_NAMES or width not in (2, 4) or len(raw) != size + n * width:
        raise LabelStoreError("corrupt mix section; run `labelstore verify` on the file")
    partner = np.frombuffer(raw, f"<u{width}", count=n, offset=size).astype(np.int64)
    return Mix(_MIX_NAMES[kind], partner, float(lam), np.array(box, np.int32))
