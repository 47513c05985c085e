"""``dense_q``: every logit uniformly quantised to 8, 6 or 4 bits with a per-record range."""
from __future__ import annotations

import struct

import numpy as np

from ..errors import LabelStoreError
from . import _bitpack, _frame
from .base import LabelCodec
from .registry import register_codec

_FIELDS = struct.Struct("<B")  # bits


@register_codec
class DenseQ(LabelCodec):
    """Per record, ``offset = min`` and ``scale = (max - min) / (2**bits - 1)`` (float32);
    each logit becomes ``round((x - offset) / scale)``. Decoding gives
    ``offset + code * scale``: error at most ``scale / 2`` per logit, no shift.
    """

    codec_id = "dense_q"
    tag = 2

    def __init__(self, num_classes: int, bits: int = 8, level: int = 3):
        super().__init__(num_classes)
        if int(bits) not in (4, 6, 8):
            raise LabelStoreError(f"dense_q bits must be 4, 6 or 8, got {bits}")
        self.bits = int(bits)
        self.level = int(level)

    def encode(self, logits: np.ndarray) -> bytes:
        x = self._check_logits(logits)
        n, top = x.shape[0], (1 << self.bits) - 1
        lo = x.min(axis=1) if n else np.zeros(0, np.float32)
        hi = x.max(axis=1) if n else np.zeros(0, np.float32)
        # float64 so that a range like (-3e38, 3e38) does not overflow to inf
        scale = ((hi.astype(np.float64) - lo) / top).astype(np.float32)
        scale = np.minimum(scale, np.finfo(np.float32).max)
        with np.errstate(divide="ignore", over="ignore"):
            inv = np.where(scale > 0, 1.0 / scale.astype(np.float64), 0.0)
        if np.abs(x).max(initial=0) < 1e30 and inv.max(initial=0) < 1e30:  # float32 suffices;
            # float64 only near overflow
            codes = (x - lo[:, None]) * inv.astype(np.float32)[:, None]
        else:
            codes = (x - lo[:, None].astype(np.float64)) * inv[:, None]
        np.rint(codes, out=codes)
        codes = np.clip(codes, 0, top).astype(np.uint8)
        streams = [_frame.shuffle_bytes(lo), _frame.shuffle_bytes(scale),
                   _bitpack.pack_codes(codes, self.bits)]
        return _frame.pack(self.tag, n, self.num_classes, _FIELDS.pack(self.bits), streams,
                           self.level)

    def decode(self, data: bytes) -> np.ndarray:
        n, rest = _frame.unpack(data, self.tag, self.num_classes, self.codec_id)
        reader = _frame.Reader(rest, self.codec_id)
        (bits,) = reader.struct(_FIELDS)
        if bits not in (4, 6, 8):
            raise LabelStoreError(f"{self.codec_id}: corrupt chunk header (bits={bits})")
        lo = reader.array(np.float32, n)
        scale = reader.array(np.float32, n)
        count = n * self.num_classes
        codes = _bitpack.unpack_codes(reader.take(_bitpack.packed_size(count, bits)), count, bits)
        reader.finish()
        codes = codes.reshape(n, self.num_classes)
        if n and float(scale.max()) * ((1 << bits) - 1) > 1e38:  # range near float32 overflow
            out = codes * scale[:, None].astype(np.float64) + lo[:, None]
            return np.clip(out, -np.finfo(np.float32).max, np.finfo(np.float32).max).astype(np.float32)
        out = codes.astype(np.float32)
        out *= scale[:, None]
        out += lo[:, None]
        return out
