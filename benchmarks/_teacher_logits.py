"""Real 1000-class teacher logits for codec work: EfficientNet-Lite0 on random crops of the
colour photos that ship with scikit-image. Cached as .npy under results/ so reruns are quick.

Run directly to precompute the cache in the background:
``python -m benchmarks._teacher_logits --crops 20000``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from distill.data import SKIMAGE_PHOTOS as PHOTOS

CACHE_DIR = Path("results") / "teacher_logits"


def load_lite0():
    """EfficientNet-Lite0 with its pretrained ImageNet weights, offline (distill.teachers)."""
    import torch

    from distill.teachers import load_efficientnet_lite

    torch.set_grad_enabled(False)
    return load_efficientnet_lite("lite0")


def load_photos() -> list[np.ndarray]:
    from distill.data import skimage_photos

    return skimage_photos()


PART = 512  # crops per cached part file: the cache grows and resumes part by part


def lite0_logits(num_crops: int, seed: int = 0, batch_size: int = 64,
                 threads: int | None = None, cache: bool = True) -> np.ndarray:
    """Logits ``(num_crops, 1000)`` float32 of Lite0 on RandomResizedCrop(224, 0.08–1) + flip
    of the skimage photos, crop i from photo i % 7. Cached in parts of 512 crops under
    results/teacher_logits/lite0_seed<seed>/ (part p is seeded by (seed, p), so a killed run
    resumes and a bigger request reuses every part already computed)."""
    folder = CACHE_DIR / f"lite0_seed{seed}"
    parts = []
    for p in range((num_crops + PART - 1) // PART):
        path = folder / f"part{p:05d}.npy"
        if cache and path.exists():
            parts.append(np.load(path))
            continue
        logits = _compute_part(seed, p, batch_size, threads)
        if cache:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + ".partial.npy")
            np.save(tmp, logits)
            os.replace(tmp, path)
        parts.append(logits)
    return np.concatenate(parts)[:num_crops] if parts else np.zeros((0, 1000), np.float32)


def cached_lite0(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every cached part of this seed (parts are independent samples, so any subset is a
    fair sample): ``(logits, photo index of each crop)``."""
    logits, photos = [], []
    for path in sorted((CACHE_DIR / f"lite0_seed{seed}").glob("part[0-9]*[0-9].npy")):
        p = int(path.stem[4:])
        logits.append(np.load(path))
        photos.append(np.arange(p * PART, (p + 1) * PART) % len(PHOTOS))
    if not logits:
        return np.zeros((0, 1000), np.float32), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(photos)


_STATE: dict = {}


def _compute_part(seed: int, part: int, batch_size: int, threads: int | None) -> np.ndarray:
    import torch
    from torchvision.transforms import v2
    from tqdm import tqdm

    if threads:
        torch.set_num_threads(threads)
    if not _STATE:
        _STATE["model"] = load_lite0()
        _STATE["photos"] = [torch.from_numpy(p).permute(2, 0, 1).contiguous() for p in load_photos()]
    model, photos = _STATE["model"], _STATE["photos"]
    torch.manual_seed(seed * 1_000_003 + part)
    crop = v2.Compose([v2.RandomResizedCrop(224, scale=(0.08, 1.0), antialias=True),
                       v2.RandomHorizontalFlip()])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    logits = np.empty((PART, 1000), np.float32)
    first = part * PART
    for start in tqdm(range(0, PART, batch_size), desc=f"Lite0 logits, part {part}", unit="batch"):
        idx = range(first + start, first + min(start + batch_size, PART))
        batch = torch.stack([crop(photos[i % len(photos)]) for i in idx]).float() / 255.0
        with torch.inference_mode():
            logits[start:start + len(idx)] = model((batch - mean) / std).numpy()
    return logits


FASHION = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_logits(train_images: int = 60000, seed: int = 0, cache: bool = True) -> np.ndarray:
    """10-class logits ``(10000, 10)`` of a tiny ConvNet trained for one epoch on
    Fashion-MNIST (the first ``train_images`` training images), on the 10k test images."""
    out = CACHE_DIR / f"fashion_convnet_{train_images}_seed{seed}.npy"
    if cache and out.exists():
        return np.load(out)
    import torch
    from torch import nn
    from tqdm import tqdm

    torch.manual_seed(seed)
    xtr = torch.from_numpy(_idx(FASHION / "train-images-idx3-ubyte.gz")[:train_images].copy())
    ytr = torch.from_numpy(_idx(FASHION / "train-labels-idx1-ubyte.gz")[:train_images].astype(np.int64))
    xte = torch.from_numpy(_idx(FASHION / "t10k-images-idx3-ubyte.gz").copy())
    prep = lambda x: (x.float().unsqueeze(1) / 255.0 - 0.286) / 0.353  # noqa: E731
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    order = torch.randperm(len(xtr))
    for start in tqdm(range(0, len(xtr), 128), desc="Fashion-MNIST ConvNet, 1 epoch", unit="batch"):
        b = order[start:start + 128]
        loss = nn.functional.cross_entropy(net(prep(xtr[b])), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.inference_mode():
        logits = torch.cat([net(prep(xte[i:i + 1000])) for i in range(0, len(xte), 1000)]).numpy()
    if cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(out, logits)
    return logits.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parts", default=None, metavar="FIRST:STOP",
                    help="only compute these cache parts (run several workers side by side)")
    args = ap.parse_args()
    if args.parts:
        first, stop = (int(v) for v in args.parts.split(":"))
        for p in range(first, stop):
            path = CACHE_DIR / f"lite0_seed{args.seed}" / f"part{p:05d}.npy"
            if not path.exists():
                logits = _compute_part(args.seed, p, 64, args.threads)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.stem + ".partial.npy")
                np.save(tmp, logits)
                os.replace(tmp, path)
        return
    x = lite0_logits(args.crops, args.seed, threads=args.threads)
    top1 = x.argmax(1)
    print(f"{x.shape} logits; mean max {x.max(1).mean():.2f}; "
          f"distinct top-1 classes {len(np.unique(top1))}; chelsea crops top-1 mode "
          f"{np.bincount(top1[1::7]).argmax()}")


if __name__ == "__main__":
    main()
