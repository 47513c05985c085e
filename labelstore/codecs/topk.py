"""``topk``: each record's k largest logits (exact class indices, quantised values) plus one
value standing for every other class, chosen so the tail keeps its probability mass."""
from __future__ import annotations

import struct

import numpy as np

from ..errors import LabelStoreError
from . import _frame, _topk
from .base import LabelCodec
from .registry import register_codec

_FIELDS = struct.Struct("<IfBB")  # k stored, step, index dtype code, delta dtype code


@register_codec
class TopK(LabelCodec):
    """Top-k + tail. Decoded logits are shifted so each record's maximum is 0: the i-th kept
    class gets ``-q_i * step``, every other class the tail value ``-q_tail * step``.

    ``tail_temperature`` picks the tail value: the temperature at which the tail's total
    probability mass is kept exact (20, the usual distillation temperature, by default);
    0 stores the plain tail mean instead. ``k`` above ``num_classes`` keeps every class.
    """

    codec_id = "topk"
    tag = 3

    def __init__(self, num_classes: int, k: int = 10, step: float = 1 / 32,
                 tail_temperature: float = 20.0, level: int = 3):
        super().__init__(num_classes)
        if int(k) < 1:
            raise LabelStoreError(f"topk k must be at least 1, got {k}")
        if not float(step) > 0 or not float(tail_temperature) >= 0:
            raise LabelStoreError("topk step must be > 0 and tail_temperature >= 0 "
                                  f"(got step={step}, tail_temperature={tail_temperature})")
        self.k, self.step = int(k), float(np.float32(step))
        self.tail_temperature, self.level = float(tail_temperature), int(level)

    def encode(self, logits: np.ndarray) -> bytes:
        x = self._check_logits(logits)
        n, c = x.shape
        k = min(self.k, c)
        idx = _topk.top_indices(x, k)
        vals = np.take_along_axis(x, idx, axis=1).astype(np.float64)
        gaps = vals[:, :1] - vals[:, 1:]
        if k < c:
            tail = _topk.tail_level(x, idx, self.tail_temperature)
            gaps = np.concatenate([gaps, (vals[:, 0] - tail)[:, None]], axis=1)
            gaps[:, -1] = np.maximum(gaps[:, -1], gaps[:, -2] if k > 1 else 0.0)
        q = _topk.gap_codes(gaps, self.step)
        deltas = np.diff(q, axis=1, prepend=0).T  # column-major: like deltas compress together
        idx_dt = _frame.smallest_uint(c - 1)
        d_dt = _frame.smallest_uint(int(deltas.max()) if deltas.size else 0)
        fields = _FIELDS.pack(k, self.step, _frame.dtype_code(idx_dt), _frame.dtype_code(d_dt))
        streams = [_frame.shuffle_bytes(idx.astype(idx_dt)), _frame.shuffle_bytes(deltas.astype(d_dt))]
        return _frame.pack(self.tag, n, c, fields, streams, self.level)

    def decode(self, data: bytes) -> np.ndarray:
        n, rest = _frame.unpack(data, self.tag, self.num_classes, self.codec_id)
        reader = _frame.Reader(rest, self.codec_id)
        k, step, idx_code, d_code = reader.struct(_FIELDS)
        c = self.num_classes
        if not 1 <= k <= c:
            raise LabelStoreError(f"{self.codec_id}: corrupt chunk header (k={k})")
        m = k - 1 + (k < c)
        idx = reader.array(_frame.dtype_from_code(idx_code, self.codec_id), n * k).reshape(n, k)
        deltas = reader.array(_frame.dtype_from_code(d_code, self.codec_id), n * m).reshape(m, n)
        reader.finish()
        if idx.size and int(idx.max()) >= c:
            raise LabelStoreError(f"{self.codec_id}: corrupt chunk (class index out of range)")
        vals = np.cumsum(deltas.T, axis=1, dtype=np.float64).astype(np.float32) * np.float32(-step)
        out = np.empty((n, c), np.float32)
        out[:] = vals[:, -1:] if k < c else 0.0
        flat = (np.arange(n)[:, None] * c + idx).reshape(-1)
        kept = np.concatenate([np.zeros((n, 1), np.float32), vals[:, :k - 1]], axis=1)
        out.reshape(-1)[flat] = kept.reshape(-1)
        return out
