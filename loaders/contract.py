"""The record↔replay contract: everything that decides the pixels a teacher saw, stored in the
label file when labels are recorded and checked (and used as defaults) when they are replayed.

A soft label belongs to exact pixels. Record mode writes what made them — crop size,
normalisation, grey, model-input dtype, the pixel backend and its interpolation — into the
file's ``pixels`` attribute; :class:`~loaders.replay.ReplayLoader` takes its defaults from
there and refuses a replay that would show other pixels unless the caller says so
(``allow_pixel_mismatch=True``). Files without the attribute (imported from other codebases,
format 1) carry no contract: the caller's settings are used as given.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from labelstore import LabelStoreError

from .mixing import per_channel

# Keys that must agree between record and replay, in the order messages list them.
CONTRACT_KEYS = ("crop_size", "mean", "std", "gray", "dtype", "backend", "interpolation", "mixing")
# Bumped when the shared pixel code (loaders.mixing) changes what it makes of the same inputs:
# 2 = Mixup blends lam*x + (1-lam)*x[partner] of the normalised batch (files without the key
# predate the contract's versioning and are checked on the other keys only).
MIXING_VERSION = 2


def backend_pixels(backend: Any) -> dict[str, str]:
    """Which pixel path a backend is: its name and interpolation (``pixel_path`` on the backend,
    else its class name with the interpolation unknown). Two backends with the same entry give
    bit-identical pixels for the same crop records."""
    path = getattr(backend, "pixel_path", None)
    if path is not None:
        return dict(path)
    return {"backend": type(backend).__name__, "interpolation": "unknown"}


def pixel_settings(backend: Any, *, crop_size: Sequence[int], mean: Sequence[float] | float,
                   std: Sequence[float] | float, gray: bool, dtype: torch.dtype) -> dict[str, Any]:
    """The contract of one pixel pipeline, as stored in the label file (JSON values)."""
    return {
        "crop_size": [int(v) for v in crop_size],
        "mean": [round(float(v), 9) for v in per_channel(mean, bool(gray), "mean")],
        "std": [round(float(v), 9) for v in per_channel(std, bool(gray), "std")],
        "gray": bool(gray),
        "dtype": str(dtype).replace("torch.", ""),
        **backend_pixels(backend),
        "mixing": MIXING_VERSION,
    }


def dtype_of(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise LabelStoreError(f"the label file records the model-input dtype {name!r}, which this torch does not have")
    return dtype


def check_replay(recorded: dict | None, replay: dict, *, allow_mismatch: bool = False) -> None:
    """Refuse a replay whose pixels differ from the recorded ones (unless ``allow_mismatch``)."""
    if not recorded or allow_mismatch:
        return
    diff = [k for k in CONTRACT_KEYS if k in recorded and recorded[k] != replay.get(k)]
    if not diff:
        return
    said = "; ".join(f"{k}: recorded {recorded[k]!r}, replay {replay.get(k)!r}" for k in diff)
    hint = ("leave mean/std/gray/dtype unset to use the recorded ones" if set(diff) & {"mean", "std", "gray", "dtype"}
            else "")
    if set(diff) & {"backend", "interpolation"}:
        hint += ("; " if hint else "") + (f"replay through the {recorded.get('backend')} backend the labels were "
                                          "recorded with (backends resize differently, so pixels are not bit-identical)")
    raise LabelStoreError(
        f"this replay would show the student other pixels than the teacher labelled ({said}); {hint}, "
        "or pass allow_pixel_mismatch=True to replay other pixels deliberately")
