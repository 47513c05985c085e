"""How a model is scored on real images: its logits, and its top-1 accuracy.

Shared by squeeze (the teachers after training), train (the student) and evaluate (any checkpoint).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distill.data import ImageDataset, to_tensor

__all__ = ["predict", "accuracy"]


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, mean: list[float], std: list[float],
            image_size: int | None = None, batch_size: int = 500, device: str = "cpu",
            progress: bool = True, desc: str = "predict") -> np.ndarray:
    """Logits (N, C) float32 of uint8 NHWC `images`, resized to `image_size` if it differs."""
    model.eval()
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        x = to_tensor(images[start : start + batch_size], mean, std, device)
        if image_size is not None and x.shape[-1] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def accuracy(model: torch.nn.Module, ds: ImageDataset, mean: list[float], std: list[float],
             image_size: int | None = None, batch_size: int = 500, device: str = "cpu",
             progress: bool = True) -> float:
    """Top-1 accuracy in [0, 1] of `model` on `ds`."""
    logits = predict(model, ds.images, mean, std, image_size, batch_size, device, progress, "evaluate")
    return float((logits.argmax(1) == ds.labels).mean())
