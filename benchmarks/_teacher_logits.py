"""Real 1000-class teacher logits for codec work: EfficientNet-Lite0 on random crops of the
colour photos that ship with scikit-image. Cached as .npy so reruns are quick.

The cache lives in ``$LABELSTORE_BENCH_CACHE`` if set, else ``results/teacher_logits/``; point
it at an empty folder to run everything from scratch. Run directly to precompute the cache in
the background: ``python -m benchmarks._teacher_logits --crops 20000``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from distill.data import SKIMAGE_PHOTOS as PHOTOS

from ._scope import torch_seed, torch_threads

CACHE_ENV = "LABELSTORE_BENCH_CACHE"


def default_cache_dir() -> Path:
    """``$LABELSTORE_BENCH_CACHE`` or ``results/teacher_logits``; read at call time so a test or a
    ``--cache-dir`` flag can redirect it after import."""
    return Path(os.environ.get(CACHE_ENV) or Path("results") / "teacher_logits")


def load_lite0():
    """EfficientNet-Lite0 with its pretrained ImageNet weights, offline (distill.teachers).

    Channels-last: 2-3x more crops/s on CPU than NCHW here (logits equal to ~1e-5)."""
    import torch

    from distill.teachers import load_efficientnet_lite

    return load_efficientnet_lite("lite0").to(memory_format=torch.channels_last)


def load_photos() -> list[np.ndarray]:
    from distill.data import skimage_photos

    return skimage_photos()


PART = 512  # crops per cached part file: the cache grows and resumes part by part


def lite0_recipe() -> dict:
    """What the cached Lite0 logits depend on: the teacher's own input spec and the crop policy."""
    from distill.teachers import teacher_spec

    return {"teacher": teacher_spec("lite0").to_dict(), "crop": "RandomResizedCrop(scale=0.08-1)+hflip",
            "photos": list(PHOTOS), "part": PART}


def lite0_folder(seed: int = 0, cache_dir: Path | None = None) -> Path:
    """The cache folder of one seed, named by a hash of `lite0_recipe()`: logits made with other
    preprocessing (e.g. the torchvision mean/std of the old ``lite0_seed<seed>/``) are never reused."""
    tag = hashlib.sha256(json.dumps(lite0_recipe(), sort_keys=True).encode()).hexdigest()[:8]
    return (cache_dir or default_cache_dir()) / f"lite0_{tag}_seed{seed}"


def _save_part(folder: Path, p: int, logits: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    recipe = folder / "recipe.json"
    if not recipe.exists():  # for people: what the hash in the folder name stands for
        recipe.write_text(json.dumps(lite0_recipe(), indent=1) + "\n")
    path = folder / f"part{p:05d}.npy"
    tmp = path.with_name(path.stem + ".partial.npy")
    np.save(tmp, logits)
    os.replace(tmp, path)


def lite0_logits(num_crops: int, seed: int = 0, batch_size: int = 32, threads: int | None = None,
                 cache: bool = True, cache_dir: Path | None = None) -> np.ndarray:
    """Logits ``(num_crops, 1000)`` float32 of Lite0 on RandomResizedCrop(224, 0.08–1) + flip
    of the skimage photos, crop i from photo i % 7, normalised as the teacher expects
    (`distill.teachers.preprocess_for_teacher`). Cached in parts of 512 crops under
    `lite0_folder` (part p is seeded by (seed, p), so a killed run resumes and a bigger request
    reuses every part already computed)."""
    folder = lite0_folder(seed, cache_dir)
    parts = []
    for p in range((num_crops + PART - 1) // PART):
        path = folder / f"part{p:05d}.npy"
        if cache and path.exists():
            parts.append(np.load(path))
            continue
        logits = _compute_part(seed, p, batch_size, threads)
        if cache:
            _save_part(folder, p, logits)
        parts.append(logits)
    return np.concatenate(parts)[:num_crops] if parts else np.zeros((0, 1000), np.float32)


def cached_lite0(seed: int = 0, cache_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every cached part of this seed (parts are independent samples, so any subset is a
    fair sample): ``(logits, photo index of each crop)``."""
    logits, photos = [], []
    for path in sorted(lite0_folder(seed, cache_dir).glob("part[0-9]*[0-9].npy")):
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

    from distill.teachers import preprocess_for_teacher, teacher_spec

    spec = teacher_spec("lite0")
    if not _STATE:
        _STATE["model"] = load_lite0()
        _STATE["photos"] = [torch.from_numpy(p).permute(2, 0, 1).contiguous() for p in load_photos()]
    model, photos = _STATE["model"], _STATE["photos"]
    crop = v2.Compose([v2.RandomResizedCrop(spec.image_size, scale=(0.08, 1.0), antialias=True),
                       v2.RandomHorizontalFlip()])
    logits = np.empty((PART, 1000), np.float32)
    first = part * PART
    # scoped: the crops draw from torch's global RNG, and the caller's threads and RNG stay as they were
    with torch_threads(threads), torch_seed(seed * 1_000_003 + part), torch.inference_mode():
        for start in tqdm(range(0, PART, batch_size), desc=f"Lite0 logits, part {part}", unit="batch"):
            idx = range(first + start, first + min(start + batch_size, PART))
            crops = torch.stack([crop(photos[i % len(photos)]) for i in idx]).permute(0, 2, 3, 1)
            # the teacher's own preprocessing; no centre crop, the random crop is the view
            x = preprocess_for_teacher(crops, spec, center_crop=False)
            logits[start:start + len(idx)] = model(x.contiguous(memory_format=torch.channels_last)).numpy()
    return logits


FASHION = Path("/usr/share/datasets/fashion-mnist")


def _idx(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_logits(train_images: int = 60000, seed: int = 0, cache: bool = True,
                   cache_dir: Path | None = None) -> np.ndarray:
    """10-class logits ``(10000, 10)`` of a tiny ConvNet trained for one epoch on
    Fashion-MNIST (the first ``train_images`` training images), on the 10k test images."""
    folder = cache_dir or default_cache_dir()
    out = folder / f"fashion_convnet_{train_images}_seed{seed}.npy"
    if cache and out.exists():
        return np.load(out)
    import torch
    from torch import nn
    from tqdm import tqdm

    xtr = torch.from_numpy(_idx(FASHION / "train-images-idx3-ubyte.gz")[:train_images].copy())
    ytr = torch.from_numpy(_idx(FASHION / "train-labels-idx1-ubyte.gz")[:train_images].astype(np.int64))
    xte = torch.from_numpy(_idx(FASHION / "t10k-images-idx3-ubyte.gz").copy())
    prep = lambda x: (x.float().unsqueeze(1) / 255.0 - 0.286) / 0.353  # noqa: E731
    with torch_seed(seed):  # init and order seeded without touching the caller's RNG
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
        order = torch.randperm(len(xtr))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for start in tqdm(range(0, len(xtr), 128), desc="Fashion-MNIST ConvNet, 1 epoch", unit="batch"):
        b = order[start:start + 128]
        loss = nn.functional.cross_entropy(net(prep(xtr[b])), ytr[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.inference_mode():
        logits = torch.cat([net(prep(xte[i:i + 1000])) for i in range(0, len(xte), 1000)]).numpy()
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(out, logits)
    return logits.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help=f"cache folder (default ${CACHE_ENV} or results/teacher_logits)")
    ap.add_argument("--parts", default=None, metavar="FIRST:STOP",
                    help="only compute these cache parts (run several workers side by side)")
    args = ap.parse_args()
    if args.parts:
        first, stop = (int(v) for v in args.parts.split(":"))
        folder = lite0_folder(args.seed, args.cache_dir)
        for p in range(first, stop):
            if not (folder / f"part{p:05d}.npy").exists():
                _save_part(folder, p, _compute_part(args.seed, p, 32, args.threads))
        return
    x = lite0_logits(args.crops, args.seed, threads=args.threads, cache_dir=args.cache_dir)
    top1 = x.argmax(1)
    print(f"{x.shape} logits in {lite0_folder(args.seed, args.cache_dir)}; mean max {x.max(1).mean():.2f}; "
          f"distinct top-1 classes {len(np.unique(top1))}; chelsea crops top-1 mode "
          f"{np.bincount(top1[1::7]).argmax()}")


if __name__ == "__main__":
    main()
