"""Small label sets in the public codebases' on-disk layouts, written with the same
``torch.save`` calls (lists of tensors, NumPy scalars and floats) those codebases make.

Each writer returns the ground truth it wrote, so tests can check every field after packing.
The SRe2L writer draws its sample order the way SRe2L's relabel does: a DataLoader over a
``RandomSampler`` whose generator is seeded with 42, iterated once per epoch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch


def image_class(ids: np.ndarray, num_classes: int) -> np.ndarray:
    return np.asarray(ids) % num_classes


def teacher_logits(rng: np.random.Generator, ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Logits whose arg-max is mostly the image's class (``id % C``)."""
    z = rng.normal(0, 2.0, (len(ids), num_classes)).astype(np.float32)
    z[np.arange(len(ids)), image_class(ids, num_classes)] += 9.0
    return z


def _crop(H: int, W: int) -> tuple[int, int, int, int]:
    from torchvision.transforms import RandomResizedCrop

    i, j, h, w = RandomResizedCrop.get_params(torch.empty(3, H, W), (0.08, 1.0), (3 / 4, 4 / 3))
    return i, j, h, w


def _rand_bbox(H: int, W: int, lam: float):
    # SRe2L's rand_bbox on an NCHW batch: its "W" is size[2] (rows) and "H" is size[3] (columns)
    Wn, Hn = H, W
    cut = np.sqrt(1.0 - lam)
    cw, ch = int(Wn * cut), int(Hn * cut)
    cx, cy = np.random.randint(Wn), np.random.randint(Hn)
    return [np.clip(cx - cw // 2, 0, Wn), np.clip(cy - ch // 2, 0, Hn), np.clip(cx + cw // 2, 0, Wn), np.clip(cy + ch // 2, 0, Hn)]


def _sre2l_batches(N, C, epochs, B, size, mix, rng, orders=None):
    """Yield (epoch, batch, ids, ijhw, flips, mix_index, lam, bbox, logits) as SRe2L's relabel makes them."""
    torch.manual_seed(0)
    np.random.seed(0)
    if orders is None:
        g = torch.Generator()
        g.manual_seed(42)
        sampler = torch.utils.data.RandomSampler(torch.utils.data.TensorDataset(torch.arange(N)), generator=g)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(N)), batch_size=B, sampler=sampler)
        batches_of = lambda e: [x[0].numpy() for x in loader]  # noqa: E731  (iterating advances the generator)
    else:
        batches_of = lambda e: [orders[e][s : s + B] for s in range(0, N, B)]  # noqa: E731
    H, W = size
    for e in range(epochs):
        for b, ids in enumerate(batches_of(e)):
            ijhw = np.array([_crop(H, W) for _ in ids], np.int64)
            flips = np.array([bool(torch.rand(1) < 0.5) for _ in ids])
            if mix == "cutmix":
                idx = torch.randperm(len(ids))
                lam = np.random.beta(1.0, 1.0)
                bbox = _rand_bbox(H, W, lam)
            elif mix == "mixup":
                idx, lam, bbox = torch.randperm(len(ids)), np.random.beta(0.8, 0.8), None
            else:
                idx, lam, bbox = None, None, None
            yield e, b, np.asarray(ids), ijhw, flips, idx, lam, bbox, teacher_logits(rng, np.asarray(ids), C)


def _coords(ijhw: np.ndarray, H: int, W: int) -> torch.Tensor:
    return torch.stack([torch.FloatTensor((i / H, j / W, h / H, w / W)) for i, j, h, w in ijhw])


def write_sre2l(root: Path, *, num_images=40, num_classes=10, epochs=3, batch_size=16, image_size=(224, 224),
                mix="cutmix", lpld_orders=False, seed=0) -> dict:
    """``root/epoch_<e>/batch_<b>.tar`` as SRe2L's generate_soft_label.py writes them (--use-fp16).
    With ``lpld_orders``, orders come from a seeded permutation and are saved as LPLD's json."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    orders = None
    if lpld_orders:
        orders = {e: rng.permutation(num_images) for e in range(epochs)}
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "sampler_indices_epoch.json", "w") as fh:
            json.dump({e: o.tolist() for e, o in orders.items()}, fh)
    truth = {}
    H, W = image_size
    for e, b, ids, ijhw, flips, idx, lam, bbox, logits in _sre2l_batches(num_images, num_classes, epochs, batch_size, image_size, mix, rng, orders):
        d = root / f"epoch_{e}"
        d.mkdir(parents=True, exist_ok=True)
        out = torch.from_numpy(logits).half()
        torch.save([_coords(ijhw, H, W), torch.from_numpy(flips), idx, lam, bbox, out], d / f"batch_{b}.tar")
        truth[(e, b)] = dict(ids=ids, boxes=ijhw, flips=flips, mix_index=None if idx is None else idx.numpy(),
                             lam=lam, bbox=bbox, logits=out.float().numpy())
    return truth


def write_hald(root: Path, *, num_images=40, num_classes=10, epochs=2, batch_size=16, image_size=(32, 32), T=20.0,
               save_orders=True, seed=0) -> dict:
    """``root/epoch_<e>.tar`` as HALD's relabel_slc.py writes them: per-batch lists with fp16
    coords and fp16 softmax(out / T); orders randperm(seed 42 + e), saved as sampler_indices_dict.pt."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    orders = {}
    for e in range(epochs):
        g = torch.Generator()
        g.manual_seed(42 + e)
        orders[e] = torch.randperm(num_images, generator=g).numpy()
    if save_orders:
        torch.save({str(e): o.tolist() for e, o in orders.items()}, root / "sampler_indices_dict.pt")
    truth = {}
    H, W = image_size
    gen = _sre2l_batches(num_images, num_classes, epochs, batch_size, image_size, "cutmix", rng, orders)
    per_epoch: dict[int, list] = {}
    for e, b, ids, ijhw, flips, idx, lam, bbox, logits in gen:
        probs = torch.softmax(torch.from_numpy(logits) / T, dim=1).half()
        coords = _coords(ijhw, H, W).half()
        per_epoch.setdefault(e, []).append([coords, torch.from_numpy(flips), idx, lam, bbox, probs])
        truth[(e, b)] = dict(ids=ids, coords=coords.float().numpy(), flips=flips, mix_index=idx.numpy(), lam=lam,
                             bbox=bbox, probs=probs.float().numpy(), logits=logits)
    for e, batches in per_epoch.items():
        torch.save(batches, root / f"epoch_{e}.tar")
    return truth


def write_fkd(root: Path, *, classes=3, per_class=4, num_crops=5, k=5, num_classes=None, image_size=(64, 48), seed=0) -> dict:
    """``root/<class>/<image>.tar`` as FKD's generate_soft_label.py writes them: NumPy
    [coords (N,4), flip (N,), label (N,2,k)] with marginal_smoothing_k{k} labels."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    C = num_classes or classes
    H, W = image_size
    truth = {"probs": [], "boxes": [], "flips": []}
    for c in range(classes):
        d = root / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ijhw = np.array([_crop(H, W) for _ in range(num_crops)], np.int64)
            coords = _coords(ijhw, H, W).numpy()
            flips = rng.random(num_crops) < 0.5
            logits = teacher_logits(rng, np.full(num_crops, c), C)
            p = torch.softmax(torch.from_numpy(logits), dim=1)
            order = torch.argsort(p, descending=True)[:, :k]
            label = torch.stack([order.float(), torch.gather(p, 1, order)], dim=1).numpy()
            torch.save([coords, flips, label], d / f"img_{i:03d}.tar")
            truth["boxes"].append(ijhw)
            truth["flips"].append(flips)
            truth["probs"].append((order.numpy(), torch.gather(p, 1, order).numpy()))
    return truth


def write_lpld(root: Path, *, r: float, num_images=40, num_classes=10, epochs=3, batch_size=8, image_size=(32, 32),
               mix="cutmix", seed=0) -> dict:
    """An LPLD label pool at pruning ratio ``r``: SRe2L's per-batch files and LPLD's
    ``sampler_indices_epoch.json``, of which only the first ``(1 - r)`` of all generated batches
    (in generation order) are kept, so the last kept epoch is usually partial."""
    root = Path(root)
    truth = write_sre2l(root, num_images=num_images, num_classes=num_classes, epochs=epochs, batch_size=batch_size,
                        image_size=image_size, mix=mix, lpld_orders=True, seed=seed)
    generated = sorted(truth)  # (epoch, batch) in generation order
    keep = max(1, int(len(generated) * (1 - r)))
    for e, b in generated[keep:]:
        (root / f"epoch_{e}" / f"batch_{b}.tar").unlink()
        del truth[(e, b)]
    for d in root.glob("epoch_*"):
        if not any(d.iterdir()):
            d.rmdir()
    return truth
