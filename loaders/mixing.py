"""Applying a batch's mix, and turning backend pixels into model input — one code path.

Record mode (teacher) and replay (student) both call :func:`to_model_input` on the uint8
batch a backend yields, so the student sees bit-for-bit the pixels the teacher labelled:
same mix, same order of operations, same normalisation. Nothing here makes the host wait for
the device: index tensors go through pinned memory, normalisation constants are built once
per (values, device).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from labelstore import LabelStoreError, Mix

from ._transfer import to_device


def _partner(images: torch.Tensor, mix: Mix) -> torch.Tensor:
    """The partner index tensor, after checking the mix fits this batch."""
    n = images.shape[0]
    partner = to_device(np.asarray(mix.partner, np.int64), images.device)
    if partner.shape != (n,):
        raise LabelStoreError(f"the mix is for a batch of {partner.shape[0]} records but the batch has {n}; "
                              "the images and labels are out of step (check the batch size)")
    if mix.kind == "cutmix":
        y0, x0, y1, x1 = (int(v) for v in mix.box)
        H, W = images.shape[-2:]
        if not (0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
            raise LabelStoreError(f"the CutMix box {(y0, x0, y1, x1)} lies outside the {H}x{W} crops; "
                                  "the crop size differs from the one the labels were made at")
    elif mix.kind != "mixup":
        raise LabelStoreError(f"unknown mix kind {mix.kind!r}")
    return partner


def apply_mix(images: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """Mix a batch ``(n, C, H, W)`` as ``mix`` says: record i with record ``mix.partner[i]``.

    CutMix pastes the partner's ``box`` region (output pixels) and keeps the dtype, so uint8
    stays exact; Mixup blends ``lam * x + (1 - lam) * x[partner]`` in float32 (two products, one
    sum: the expression SRe2L-style scripts write, so they reproduce it bit for bit).
    """
    if mix is None:
        return images
    partner = _partner(images, mix)
    if mix.kind == "cutmix":
        y0, x0, y1, x1 = (int(v) for v in mix.box)
        out = images.clone()
        out[:, :, y0:y1, x0:x1] = images[partner, :, y0:y1, x0:x1]
        return out
    x = images if images.is_floating_point() else images.float()
    lam = float(mix.lam)
    return x * lam + x[partner] * (1.0 - lam)


def mix_targets(targets: torch.Tensor, mix: Mix | None) -> torch.Tensor:
    """Mix per-record targets linearly: ``lam * y + (1 - lam) * y[partner]`` (CutMix and Mixup alike)."""
    if mix is None:
        return targets
    partner = to_device(np.asarray(mix.partner, np.int64), targets.device)
    lam = float(mix.lam)
    return targets * lam + targets[partner] * (1.0 - lam)


def per_channel(values: Sequence[float] | float, gray: bool, name: str) -> list[float]:
    """Normalisation constants `values` (1 or 3) as one per input channel: 1 for grey, 3 for colour."""
    v = [float(values)] if np.isscalar(values) else [float(x) for x in values]
    if len(v) not in (1, 3):
        raise LabelStoreError(f"{name} needs 1 or 3 values (per channel), got {len(v)}")
    if gray:
        return v[:1]
    return v * 3 if len(v) == 1 else v


def to_model_input(
    pixels: torch.Tensor,
    mix: Mix | None,
    *,
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    gray: bool = False,
) -> torch.Tensor:
    """uint8 ``(n, 3, H, W)`` from a backend -> mixed, normalised ``(x/255 - mean)/std`` model input.

    ``mean``/``std`` are in [0, 1] units (e.g. ImageNet's 0.485, ...). ``gray`` keeps channel 0
    only, for 1-channel models (backends replicate gray images to 3 channels).
    """
    device = torch.device(device)
    x = to_device(pixels, device)
    if gray:
        x = x[:, :1]
    scale, shift = _normalisation(tuple(per_channel(mean, gray, "mean")), tuple(per_channel(std, gray, "std")),
                                  x.device)
    # One new tensor, then in-place work: fresh 60 MB buffers cost more in page faults than the
    # arithmetic. Normalising is per-pixel affine, so mixing after it gives the same images as
    # mixing before it (CutMix bit for bit; Mixup up to rounding, identically in record and replay).
    x = x.to(torch.float32)
    x.mul_(scale).sub_(shift)
    _mix_in_place(x, mix)
    if dtype != torch.float32:
        x = x.to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@lru_cache(maxsize=64)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """``(1 / (255 std), mean / std)`` as (1, C, 1, 1) float32 tensors on ``device``, built once:
    per batch, building them would be two blocking host-to-device copies."""
    if min(std) <= 0:
        raise LabelStoreError("std values must be positive")
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (1.0 / (255.0 * s)).to(device), (m / s).to(device)


def _mix_in_place(x: torch.Tensor, mix: Mix | None) -> None:
    """:func:`apply_mix` on a float batch, in place (the partner's pixels are copied first)."""
    if mix is None:
        return
    partner = _partner(x, mix)
    if mix.kind == "cutmix":
        y0, x0, y1, x1 = (int(v) for v in mix.box)
        x[:, :, y0:y1, x0:x1] = x[partner, :, y0:y1, x0:x1]  # the right side is a copy
    else:  # x[partner] is taken before x changes; then lam * x + (1 - lam) * x[partner], rounded as written
        lam = float(mix.lam)
        other = x[partner].mul_(1.0 - lam)
        x.mul_(lam).add_(other)
