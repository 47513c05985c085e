"""Soft-label codecs: logits ``(n, num_classes)`` float32 <-> self-contained zstd bytes.

Each codec is a small class registered by its ``codec_id``; ``get_codec(config, arrays)``
rebuilds one from the config (and learned arrays) stored in a label file. See docs/codecs.md
for the byte layouts.
"""
from .base import LabelCodec
from .registry import codec_ids, get_codec, parse_codec_spec, register_codec
from .dense16 import Dense16
from .dense_q import DenseQ
from .topk import TopK
from .lowrank import LowRank

__all__ = [
    "LabelCodec", "codec_ids", "get_codec", "parse_codec_spec", "register_codec",
    "Dense16", "DenseQ", "TopK", "LowRank",
]
