"""Codec lookup by id, and the compact string form used on the command line."""
from __future__ import annotations

import difflib
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


def known_codecs() -> str:
    """Every registered codec with its parameters at their defaults, from the classes themselves."""
    return "; ".join(_REGISTRY[cid].describe() for cid in codec_ids())


def _unknown(cid: str, what: str) -> LabelStoreError:
    close = difflib.get_close_matches(cid, codec_ids(), 1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return LabelStoreError(f"unknown codec {cid!r}{hint}{what}; known codecs, with their parameters' defaults: "
                           f"{known_codecs()}")


def get_codec(config: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> LabelCodec:
    """Rebuild a codec from its config (and learned arrays, if any)."""
    cid = config.get("id")
    if cid not in _REGISTRY:
        raise _unknown(cid, " (a file written by a newer labelstore-kit may use a codec this one lacks)")
    return _REGISTRY[cid].from_config(config, arrays)


def parse_codec_spec(spec: str, num_classes: int) -> LabelCodec:
    """Build a codec from ``"id"`` or ``"id:key=value,key=value"`` (e.g. ``topk:k=10,step=0.0625``).

    Every mistake -- an unknown id or parameter, a value of the wrong type or out of range -- is a
    LabelStoreError that names what the codecs take.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LabelStoreError(f"empty codec spec {spec!r}; write id or id:key=value,…; known codecs: {known_codecs()}")
    cid, colon, rest = spec.partition(":")
    cid = cid.strip()
    if "=" in cid:  # "topk=10": the id and its first parameter run together
        head = cid.partition("=")[0].strip()
        example = _REGISTRY[head].describe() if head in _REGISTRY else "topk:k=10"
        raise LabelStoreError(f"codec spec {spec!r} has no codec id before its parameters; write id:key=value, "
                              f"e.g. {example}; known codecs: {known_codecs()}")
    if cid not in _REGISTRY:
        raise _unknown(cid, f" in spec {spec!r}")
    if colon and not rest.strip():
        raise LabelStoreError(f"codec spec {spec!r} ends in ':' with no parameters; write {cid} or "
                              f"{_REGISTRY[cid].describe()}")
    params: dict[str, Any] = {}
    for item in filter(str.strip, rest.split(",")):  # a trailing comma is harmless
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise LabelStoreError(f"bad codec parameter {item.strip()!r} in {spec!r}; write key=value, "
                                  f"e.g. {_REGISTRY[cid].describe()}")
        if key == "num_classes":
            raise LabelStoreError(f"codec spec {spec!r} sets num_classes; leave it out: it comes from the labels")
        if key in params:
            raise LabelStoreError(f"codec spec {spec!r} gives {key} twice")
        params[key] = _parse_value(value.strip())
    # the codec's constructor checks names, types and ranges (LabelCodec.__init_subclass__)
    return _REGISTRY[cid](num_classes, **params)


def _parse_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
