"""Codec lookup by id, and the compact string form used on the command line."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LabelStoreError
from .base import LabelCodec

_REGISTRY: dict[str, type[LabelCodec]] = {}


def register_codec(cls: type[LabelCodec]) -> type[LabelCodec]:
    """Class decorator: make ``cls`` findable by its ``codec_id``."""
    _REGISTRY[cls.codec_id] = cls
    return cls


def codec_ids() -> list[str]:
    return sorted(_REGISTRY)


def get_codec(config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> LabelCodec:
    """Rebuild a codec from its config (and learned arrays, if any)."""
    cid = config.get("id")
    if cid not in _REGISTRY:
        raise LabelStoreError(
            f"unknown codec id {cid!r}; known: {', '.join(codec_ids())}. "
            "The file may need a newer labelstore-kit."
        )
    return _REGISTRY[cid].from_config(config, arrays)


def parse_codec_spec(spec: str, num_classes: int) -> LabelCodec:
    """Build a codec from ``"id"`` or ``"id:key=value,key=value"`` (e.g. ``topk:k=10,bits=8``)."""
    cid, _, rest = spec.partition(":")
    params: dict[str, Any] = {"num_classes": num_classes}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise LabelStoreError(f"bad codec parameter {item!r} in {spec!r}; write key=value")
        params[key.strip()] = _parse_value(value.strip())
    config = {"id": cid.strip(), **params}
    try:
        return get_codec(config)
    except TypeError as exc:
        raise LabelStoreError(f"bad parameters for codec {cid!r}: {exc}") from None


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
