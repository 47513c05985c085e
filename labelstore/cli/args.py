"""Argument helpers shared by the ``labelstore`` subcommands."""
from __future__ import annotations

import argparse


def image_size_arg(text: str):
    """'224', '32x32', 'HxW' or a path to an (N, 2) .npy of per-image sizes."""
    if text.lower().endswith(".npy"):
        import numpy as np

        return np.load(text)
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size takes 224, HxW or sizes.npy, got {text!r}") from None
    if len(vals) == 1:
        return (vals[0], vals[0])
    if len(vals) != 2:
        raise argparse.ArgumentTypeError(f"--image-size takes 224, HxW or sizes.npy, got {text!r}")
    return tuple(vals)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n}"
