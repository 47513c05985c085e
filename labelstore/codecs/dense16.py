"""``dense16``: every logit as IEEE fp16 — the compatibility baseline (what SRe2L stores)."""
from __future__ import annotations


import numpy as np

from . import _frame
from .base import LabelCodec
from .registry import register_codec

_FP16_MAX = float(np.finfo(np.float16).max)


@register_codec
class Dense16(LabelCodec):
    """Dense fp16 logits, byte-shuffled and zstd-compressed. Logits beyond ±65504 are clipped
    to the fp16 range (no real teacher produces them; softmax of such rows is one-hot anyway).

    Decodes to the stored logits themselves (no shift).
    """

    codec_id = "dense16"
    tag = 1

    def __init__(self, num_classes: int, level: int = 3):
        super().__init__(num_classes)
        self.level = int(level)

    def encode(self, logits: np.ndarray) -> bytes:
        x = self._check_logits(logits)
        half = np.clip(x, -_FP16_MAX, _FP16_MAX).astype(np.float16)
        return _frame.pack(self.tag, x.shape[0], self.num_classes, b"",
                           [_frame.shuffle_bytes(half)], self.level)

    def decode(self, data: bytes) -> np.ndarray:
        n, rest = _frame.unpack(data, self.tag, self.num_classes, self.codec_id)
        reader = _frame.Reader(rest, self.codec_id)
        half = reader.array(np.float16, n * self.num_classes)
        reader.finish()
        return half.astype(np.float32).reshape(n, self.num_classes)
