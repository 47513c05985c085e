"""labelstore: a compact, self-describing file of per-crop soft labels.

Public API: :class:`LabelWriter` and :class:`LabelFile` (write / read a label set), the
codecs, the crop/order/mix policies and their draw functions, and the one error type.
Importable without torch.
"""
from ._format import LABELSTORE_VERSION as __version__

from .errors import CheckFailed, LabelStoreError
from .codecs import LabelCodec, codec_ids, get_codec, parse_codec_spec, register_codec
from .crops import CropPolicy, Mix, MixPolicy, draw_crops, draw_mix, draw_order
from .fingerprint import FingerprintBuilder, check_fingerprint, image_set_fingerprint
from .writer import LabelWriter, logits_from_probs
from .reader import Batch, LabelFile
from .verify import verify_file
from .merge import merge_shards

__all__ = [
    "LabelStoreError", "CheckFailed", "LabelCodec", "codec_ids", "get_codec", "parse_codec_spec", "register_codec",
    "CropPolicy", "Mix", "MixPolicy", "draw_crops", "draw_mix", "draw_order",
    "FingerprintBuilder", "check_fingerprint", "image_set_fingerprint",
    "LabelWriter", "logits_from_probs", "Batch", "LabelFile", "verify_file", "merge_shards",
]
