"""The codec contract, after numcodecs: a small class per codec with a JSON config.

A codec turns a block of teacher logits ``(n, num_classes)`` float32 into bytes and back.
Everything needed to decode lives in the codec's config (JSON, stored in the label file)
plus, for learned codecs, a few named arrays (stored as datasets beside the config).
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from ..errors import LabelStoreError


class LabelCodec:
    """Base class: subclasses set ``codec_id`` and implement ``encode`` / ``decode``.

    Constructor keyword arguments, attribute names and config keys are the same names, so
    ``from_config(get_config())`` rebuilds an equal codec.
    """

    codec_id: ClassVar[str] = ""
    #: True when the codec must see a sample of real logits (``fit``) before encoding.
    needs_fit: ClassVar[bool] = False

    def __init__(self, num_classes: int):
        if int(num_classes) < 2:
            raise LabelStoreError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)

    # -- the contract -------------------------------------------------------------------
    def encode(self, logits: np.ndarray) -> bytes:
        """Encode float logits of shape ``(n, num_classes)`` (n may be 0) into bytes."""
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes from ``encode`` into float32 logits of shape ``(n, num_classes)``."""
        raise NotImplementedError

    def fit(self, sample: np.ndarray) -> "LabelCodec":
        """Fit learned parameters to a sample of logits; returns self. A no-op by default."""
        return self

    @property
    def is_fitted(self) -> bool:
        return True

    def get_config(self) -> dict[str, Any]:
        """JSON-able dict: ``id`` plus the constructor arguments."""
        config = {"id": self.codec_id}
        config.update({k: v for k, v in vars(self).items() if not k.startswith("_")})
        return config

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Large learned parameters (a basis, a codebook), stored as datasets. None by default."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None):
        params = {k: v for k, v in config.items() if k != "id"}
        codec = cls(**params)
        if arrays:
            codec._set_arrays(arrays)
        return codec

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise LabelStoreError(f"codec {self.codec_id!r} takes no arrays, got {sorted(arrays)}")

    # -- conveniences -------------------------------------------------------------------
    def _check_logits(self, logits: np.ndarray) -> np.ndarray:
        """Validate shape and finiteness; return a C-contiguous float32 view or copy."""
        arr = np.asarray(logits)
        if arr.ndim != 2 or arr.shape[1] != self.num_classes:
            raise LabelStoreError(
                f"expected logits of shape (n, {self.num_classes}), got {arr.shape}; "
                "check that the teacher's class count matches the label file's num_classes"
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            raise LabelStoreError(
                f"{bad} of {arr.shape[0]} records contain NaN or Inf logits; "
                "fix the teacher output (e.g. run it in fp32) before writing"
            )
        return arr

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LabelCodec)
            and json.dumps(self.get_config(), sort_keys=True) == json.dumps(other.get_config(), sort_keys=True)
            and self.get_arrays().keys() == other.get_arrays().keys()
            and all(np.array_equal(v, other.get_arrays()[k]) for k, v in self.get_arrays().items())
        )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"{type(self).__name__}({args})"
