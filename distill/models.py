"""Student and teacher architectures behind one factory, plus their checkpoint format.

`build_model(name, num_classes, in_channels, image_size)` builds a fresh (randomly
initialised) network; torchvision models are built with `weights=None` and never download.
Images of 64 px or less get the small-image variant of a torchvision network (3x3 stride-1
stem, no max-pool), as CIFAR-style dataset-distillation code does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torchvision.models as tvm

from labelstore.errors import LabelStoreError

__all__ = [
    "MODEL_NAMES",
    "ConvNet",
    "LeNet",
    "build_model",
    "save_checkpoint",
    "load_checkpoint",
    "check_class_count",
    "SMALL_IMAGE_MAX",
]

SMALL_IMAGE_MAX = 64  # at or below this side, torchvision models use a small-image stem
MODEL_NAMES = ("convnet", "resnet18", "mobilenetv2", "shufflenetv2", "densenet121", "lenet")
_ALIASES = {
    "convnetd3": "convnet", "resnet-18": "resnet18", "mobilenet_v2": "mobilenetv2",
    "shufflenet_v2": "shufflenetv2", "shufflenet_v2_x1_0": "shufflenetv2", "densenet-121": "densenet121",
    "lenet5": "lenet", "lenet-5": "lenet",
}


class ConvNet(nn.Module):
    """The dataset-distillation benchmark ConvNet: `depth` x (conv3x3-BN-ReLU-avgpool2), linear head."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 width: int = 128, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, side = in_channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c, side = width, side // 2
        if side < 1:
            raise LabelStoreError(f"ConvNet depth {depth} needs images of at least {2 ** depth} px, got {image_size}")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max-pooling, as dataset-distillation papers evaluate across
    architectures: conv5x5 6 (padded) - pool - conv5x5 16 - pool - 120 - 84 - classes. No
    BatchNorm, so a student only: recover matches a teacher's BatchNorm statistics."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32) -> None:
        super().__init__()
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise LabelStoreError(f"LeNet needs images of at least 12 px, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _conv_like(old: nn.Conv2d, in_channels: int, stride: int | None = None,
               kernel: int | None = None) -> nn.Conv2d:
    k = kernel or old.kernel_size[0]
    return nn.Conv2d(in_channels, old.out_channels, k, stride or old.stride[0],
                     padding=k // 2, bias=old.bias is not None)


def _resnet18(num_classes: int, in_channels: int, small: bool) -> nn.Module:
    m = tvm.resnet18(weights=None, num_classes=num_classes)
    if small:
        m.conv1 = _conv_like(m.conv1, in_channels, stride=1, kernel=3)
        m.maxpool = nn.Identity()
    elif in_channels != 3:
        m.conv1 = _conv_like(m.conv1, in_channels)
    return m


def _mobilenetv2(num_classes: int, in_channels: int, small: bool) -> nn.Module:
    m = tvm.mobilenet_v2(weights=None, num_classes=num_classes)
    stem = m.features[0][0]
    if small or in_channels != 3:
        m.features[0][0] = _conv_like(stem, in_channels, stride=1 if small else 2)
    return m


def _shufflenetv2(num_classes: int, in_channels: int, small: bool) -> nn.Module:
    m = tvm.shufflenet_v2_x1_0(weights=None, num_classes=num_classes)
    if small or in_channels != 3:
        m.conv1[0] = _conv_like(m.conv1[0], in_channels, stride=1 if small else 2)
    if small:
        m.maxpool = nn.Identity()
    return m


def _densenet121(num_classes: int, in_channels: int, small: bool) -> nn.Module:
    m = tvm.densenet121(weights=None, num_classes=num_classes)
    if small:
        m.features.conv0 = _conv_like(m.features.conv0, in_channels, stride=1, kernel=3)
        m.features.pool0 = nn.Identity()
    elif in_channels != 3:
        m.features.conv0 = _conv_like(m.features.conv0, in_channels)
    return m


_TORCHVISION = {"resnet18": _resnet18, "mobilenetv2": _mobilenetv2,
                "shufflenetv2": _shufflenetv2, "densenet121": _densenet121}


def _convnet_width(key: str) -> int | None:
    """`convnet-w64` -> 64 (a narrower/wider benchmark ConvNet); None for other names."""
    if key.startswith("convnet-w") and key[len("convnet-w"):].isdigit() and int(key[len("convnet-w"):]) > 0:
        return int(key[len("convnet-w"):])
    return None


def canonical_name(name: str) -> str:
    key = name.lower().replace(" ", "")
    key = _ALIASES.get(key, key)
    if _convnet_width(key) is not None:
        return key
    if key not in MODEL_NAMES:
        raise LabelStoreError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}"
                              ", convnet-w<width> (e.g. convnet-w32)"
                              " (or an EfficientNet-Lite teacher: efficientnet-lite0/1/2)")
    return key


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A freshly initialised `name` network for `num_classes` classes at `image_size` px."""
    key = canonical_name(name)
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise LabelStoreError(f"bad model shape: num_classes={num_classes}, in_channels={in_channels}, "
                              f"image_size={image_size}; all must be positive")
    if key == "convnet":
        return ConvNet(num_classes, in_channels, image_size)
    if key == "lenet":
        return LeNet(num_classes, in_channels, image_size)
    if _convnet_width(key) is not None:  # e.g. convnet-w32: the same ConvNet, fewer channels (fast demos)
        return ConvNet(num_classes, in_channels, image_size, width=_convnet_width(key))
    return _TORCHVISION[key](num_classes, in_channels, image_size <= SMALL_IMAGE_MAX)


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write `{"state_dict", **meta}` with torch.save; meta must name model, num_classes,
    in_channels, image_size (and may add mean/std, test_acc, config). Atomic via a temp file."""
    for key in ("model", "num_classes", "in_channels", "image_size"):
        if key not in meta:
            raise ValueError(f"checkpoint meta lacks {key!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, **meta}, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, load its weights, return (model in eval, meta)."""
    path = Path(path)
    if not path.exists():
        raise LabelStoreError(f"checkpoint {path} does not exist; make one with `distill squeeze`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a non-checkpoint file
        raise LabelStoreError(f"{path} is not a distill checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise LabelStoreError(f"{path} is not a distill checkpoint (no 'state_dict'/'model' entries)")
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    model = build_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["image_size"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device), meta


def check_class_count(meta: dict[str, Any], num_classes: int, data_name: str = "the data set",
                      what: str = "teacher") -> None:
    """LabelStoreError unless a model's class count matches the data's."""
    if int(meta["num_classes"]) != int(num_classes):
        raise LabelStoreError(
            f"{what} has {meta['num_classes']} classes, data set {data_name} has {num_classes}; "
            f"use a {what} trained on this data (`distill squeeze --data ...`) or the matching data set"
        )

