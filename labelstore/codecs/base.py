"""The codec contract, after numcodecs: a small class per codec with a JSON config.

A codec turns a block of teacher logits ``(n, num_classes)`` float32 into bytes and back.
Everything needed to decode lives in the codec's config (JSON, stored in the label file)
plus, for learned codecs, a few named arrays (stored as datasets beside the config).
"""
from __future__ import annotations

import difflib
import functools
import inspect
import json
import math
import numbers
from typing import Any, ClassVar

import numpy as np

from ..errors import LabelStoreError

# zstd's own level range (ZSTD_minCLevel() .. ZSTD_maxCLevel(); 0 means its default, 3)
ZSTD_LEVELS = (-(1 << 17), 22)


class LabelCodec:
    """Base class: subclasses set ``codec_id`` and implement ``encode`` / ``decode``.

    Constructor keyword arguments, attribute names and config keys are the same names, so
    ``from_config(get_config())`` rebuilds an equal codec.
    """

    codec_id: ClassVar[str] = ""
    #: True when the codec must see a sample of real logits (``fit``) before encoding.
    needs_fit: ClassVar[bool] = False

    def __init__(self, num_classes: int):
        _check_num_classes(self.codec_id, num_classes)
        self.num_classes = int(num_classes)

    def __init_subclass__(cls, **kwargs):
        # Every codec's constructor is checked against its own signature before it runs, so a
        # typo (k="1O", k=true, an unknown keyword) is a LabelStoreError naming the parameter
        # and what it takes -- for codecs written later too, without each repeating the checks.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_checked", False):
            cls.__init__ = _checked_init(init)

    @classmethod
    def params(cls) -> dict[str, inspect.Parameter]:
        """The codec's parameters (constructor keywords other than ``num_classes``), in order."""
        sig = inspect.signature(cls.__init__, eval_str=True)
        return {n: p for n, p in list(sig.parameters.items())[1:]
                if n != "num_classes" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @classmethod
    def describe(cls) -> str:
        """The codec as a spec with every parameter at its default, e.g. ``topk:k=10,step=0.03125``."""
        params = ",".join(f"{n}={_show(p.default)}" if p.default is not p.empty else f"{n}=<{_kind_name(p)}>"
                          for n, p in cls.params().items())
        return f"{cls.codec_id}:{params}" if params else cls.codec_id

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


# -- parameter checks shared by every codec -----------------------------------------------
def _check_num_classes(codec_id: str, value: Any) -> None:
    if not _is_int(value) or int(value) < 2:
        raise LabelStoreError(f"{codec_id or 'codec'}: num_classes must be an integer >= 2, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _kind(param: inspect.Parameter) -> type | None:
    """The type a parameter takes: its annotation, else its default's type (None: unchecked)."""
    ann = param.annotation
    if ann is param.empty:
        ann = type(param.default) if param.default is not param.empty and param.default is not None else None
    return ann if ann in (int, float, bool, str) else None


def _kind_name(param: inspect.Parameter) -> str:
    return {int: "integer", float: "number", bool: "true/false", str: "text", None: "value"}[_kind(param)]


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _checked_init(init):
    sig = inspect.signature(init, eval_str=True)
    names = [n for n in list(sig.parameters)[1:]]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        cls = type(self)
        cid = cls.codec_id or cls.__name__
        if not takes_any:
            for key in kwargs:
                if key not in sig.parameters or key == "self":
                    close = difflib.get_close_matches(key, names, 1)
                    raise LabelStoreError(
                        f"codec {cid} has no parameter {key!r}{f' (did you mean {close[0]}?)' if close else ''}; "
                        f"it takes: {_takes(cls)}")
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError as exc:  # a missing num_classes, too many positional arguments
            raise LabelStoreError(f"codec {cid}: {exc}; it takes num_classes and {_takes(cls)}") from None
        for name, value in list(bound.arguments.items())[1:]:
            param = sig.parameters[name]
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if name == "num_classes":
                _check_num_classes(cid, value)
                continue
            _check_value(cls, cid, name, param, value)
        try:
            init(*bound.args, **bound.kwargs)
        except (TypeError, ValueError) as exc:  # a range check a codec wrote with int()/float()
            raise LabelStoreError(f"codec {cid}: bad parameters ({exc}); it takes: {_takes(cls)}") from None

    checked._checked = True
    return checked


def _takes(cls) -> str:
    return ", ".join(f"{n} ({_kind_name(p)}{'' if p.default is p.empty else f', default {_show(p.default)}'})"
                     for n, p in cls.params().items()) or "no parameters"


def _check_value(cls, cid: str, name: str, param: inspect.Parameter, value: Any) -> None:
    kind = _kind(param)
    if value is None and param.default is None:
        return
    ok = {
        int: _is_int(value),
        float: isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value),
        bool: isinstance(value, (bool, np.bool_)),
        str: isinstance(value, str),
        None: True,
    }[kind]
    if not ok:
        what = {int: "an integer", float: "a finite number", bool: "true or false", str: "text"}[kind]
        raise LabelStoreError(f"codec {cid}: {name} must be {what}, got {value!r}; {cid} takes: {_takes(cls)}")
    if name == "level" and not ZSTD_LEVELS[0] <= int(value) <= ZSTD_LEVELS[1]:
        raise LabelStoreError(f"codec {cid}: level is the zstd level, {ZSTD_LEVELS[0]}..{ZSTD_LEVELS[1]} "
                              f"(3 is the default, higher is smaller and slower), got {value!r}")
