"""`distill recover`: synthesise a few images per class from teachers alone.

SRe2L: optimise the image tensor with Adam so that one teacher classifies it as its target
class (cross-entropy) while the batch's BatchNorm input statistics match the teacher's running
statistics (`r_bn`, first BN layer weighted by `first_bn_mul`), under random crop, flip and
jitter. CV-DD: the same, but each batch (one image index) is optimised against a committee
drawn from a pool of teachers, with weights softmax(prior_acc / T):
loss = Σ_i w_i (CE_i + r_bn · BN_i); T is the committee temperature (`--committee-temperature`).
Loading the teachers and their weights is `distill.committee`; the BN loss `distill.losses`.
Output: `images.npz` (uint8 NHWC images, int64 labels), `images.beton` when FFCV is
installed, a PNG grid, the loss log and the resolved config.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from distill.committee import Teacher, check_one_label_space, check_priors, committee_weights, load_teachers
from distill.config import write_config
from distill.data import ImageDataset, save_npz
from distill.inputs import default_crop_scale, resolved_flip, teachers_data, warn_small_crops
from distill.losses import BNStatsLoss
from distill.optim import cosine_lr, set_lr
from distill.tables import write_csv
from labelstore.errors import LabelStoreError

__all__ = ["RecoverConfig", "recover", "recover_images", "preview_grid", "save_grid", "resolved_batch_size"]


@dataclass
class RecoverConfig:
    """Settings of `distill recover`; defaults recover Fashion-MNIST at 10 images/class in minutes."""

    teachers: list[str] = field(default_factory=lambda: ["runs/squeeze/convnet.pt"])
    out_dir: str = "runs/recover"
    method: str = "sre2l"  # "sre2l" (first teacher) or "cvdd" (a committee per image index)
    ipc: int = 10  # images per class
    # recover only these class ids (e.g. 100 of ImageNet-1K's 1000); None: every class of the teachers
    classes: list[int] | None = None
    iterations: int = 150
    lr: float = 0.25  # Adam on the normalised image tensor, betas (0.5, 0.9) as SRe2L
    r_bn: float = 0.01
    first_bn_mul: float = 10.0
    # images optimised together; None = all of them when ipc*classes <= 256 for SRe2L (large
    # batches are ~2x cheaper per image on CPU), else one image index (every class once)
    batch_size: int | None = None
    crop_scale: tuple[float, float] | None = None  # RandomResizedCrop scale; None = by image size
    flip: bool | None = None  # random flips; None = as the teachers were trained (squeeze --no-flip)
    jitter: int | None = None  # random roll of up to this many px; None = image_size // 14
    committee_size: int = 2  # CV-DD: teachers per image index
    temperature: float = 5.0  # CV-DD committee temperature T: weights softmax(prior_acc[%] / T)
    priors: list[float] | None = None  # CV-DD prior accuracies in %; None = checkpoints' test/val acc
    image_size: int | None = None  # synthetic image side; None = the first teacher's
    # the teachers' data set, recorded for relabel/train; None = the one their checkpoints record,
    # a spec = that one, checked against them; "none" = no data set (pretrained teachers)
    data: str | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 10
    # also write images.beton (needs FFCV); None = only when the pixels outweigh FFCV's page
    # padding (a beton of 100 8x8 images is 16.8 MB for 6.4 KB of pixels)
    beton: bool | None = None


def _load_teachers(cfg: RecoverConfig) -> list[Teacher]:
    """The teachers of `cfg`, each with a BatchNorm layer to match, in one label space; CV-DD
    needs a prior per teacher."""
    if not cfg.teachers:
        raise LabelStoreError("recover needs at least one teacher (--teachers ckpt.pt or efficientnet-lite0)")

    def has_bn(spec: str, model: nn.Module, meta: dict[str, Any]) -> None:
        if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):  # what BNStatsLoss hooks
            raise LabelStoreError(f"teacher {spec} has no BatchNorm layer; BN matching needs one")

    teachers = load_teachers(cfg.teachers, cfg.device, cfg.priors or None, check=has_bn)
    check_one_label_space(teachers)
    if cfg.method == "cvdd":
        check_priors(teachers, "CV-DD")
    return teachers


def _augment(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float], flip: bool,
             jitter: int) -> torch.Tensor:
    """One random resized crop (+ flip, + roll) shared by the batch, differentiable in x."""
    s = x.shape[-1]
    if jitter > 0:
        dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    area = s * s * (scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=gen)))
    ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand((), generator=gen)))
    w = int(round(min(s, max(1, math.sqrt(area * ratio)))))
    h = int(round(min(s, max(1, math.sqrt(area / ratio)))))
    top = int(torch.randint(0, s - h + 1, (), generator=gen))
    left = int(torch.randint(0, s - w + 1, (), generator=gen))
    x = x[..., top : top + h, left : left + w]
    if (h, w) != (s, s):
        x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    if flip and float(torch.rand((), generator=gen)) < 0.5:
        x = x.flip(-1)
    return x


def resolved_classes(cfg: RecoverConfig, num_classes: int) -> np.ndarray:
    """The class ids to recover: `cfg.classes` (checked against the teachers' classes), else all."""
    if cfg.classes is None:
        return np.arange(num_classes, dtype=np.int64)
    c = np.asarray(cfg.classes, dtype=np.int64)
    if c.ndim != 1 or not len(c) or (c < 0).any() or (c >= num_classes).any() or len(np.unique(c)) != len(c):
        raise LabelStoreError(f"--classes must be distinct class ids in 0..{num_classes - 1} (the teachers' "
                              f"classes), got {list(cfg.classes)[:8]}{'...' if len(cfg.classes) > 8 else ''}")
    return c


def resolved_batch_size(cfg: RecoverConfig, num_classes: int) -> int:
    """The batch size `cfg` means (see RecoverConfig.batch_size); CV-DD keeps one index per batch."""
    if cfg.batch_size:
        return int(cfg.batch_size)
    n = len(resolved_classes(cfg, num_classes))
    total = n * cfg.ipc
    return total if cfg.method == "sre2l" and total <= 256 else n


def _targets(classes: np.ndarray, ipc: int, batch_size: int) -> list[np.ndarray]:
    """Labels grouped into batches: image index k covers every class once (SRe2L order)."""
    labels = np.tile(classes, ipc)
    return [labels[i : i + batch_size] for i in range(0, len(labels), batch_size)]


def recover_images(cfg: RecoverConfig, teachers: list[Teacher], progress: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Run SRe2L / CV-DD; returns (uint8 NHWC images, labels, per-log-step loss rows)."""
    if cfg.method not in ("sre2l", "cvdd"):
        raise LabelStoreError(f"unknown recover method {cfg.method!r}; use 'sre2l' or 'cvdd'")
    ref = teachers[0].meta
    num_classes = int(ref["num_classes"])
    size = int(cfg.image_size or ref["image_size"])
    scale = tuple(cfg.crop_scale) if cfg.crop_scale else default_crop_scale(size)
    warn_small_crops(size, scale, "recover")
    augment = dict(scale=scale, flip=resolved_flip(cfg.flip, [t.meta for t in teachers]),
                   jitter=cfg.jitter if cfg.jitter is not None else size // 14)
    gen = torch.Generator().manual_seed(cfg.seed)
    batches = _targets(resolved_classes(cfg, num_classes), cfg.ipc, resolved_batch_size(cfg, num_classes))
    k = min(cfg.committee_size, len(teachers)) if cfg.method == "cvdd" else 1
    matchers = [BNStatsLoss(t.model, cfg.first_bn_mul) for t in teachers]  # hooks, removed at the end
    images, rows = [], []
    try:
        outer = tqdm(batches, desc=f"recover {cfg.method}", disable=not progress or len(batches) == 1)
        for b, labels in enumerate(outer):
            members = (sorted(torch.randperm(len(teachers), generator=gen)[:k].tolist())
                       if cfg.method == "cvdd" else [0])
            weights = (committee_weights([teachers[i].prior for i in members], cfg.temperature)
                       if cfg.method == "cvdd" else torch.ones(1))
            committee = [(w, teachers[i], matchers[i]) for w, i in zip(weights.tolist(), members)]
            desc = f"recover batch {b + 1}/{len(batches)}"
            pixels, log = _recover_batch(cfg, committee, labels, ref, size, augment, gen, b, desc, progress)
            images.append(pixels)
            rows += log
    finally:
        for m in matchers:
            m.remove()
    return np.concatenate(images), np.concatenate(batches), rows


def _recover_batch(cfg: RecoverConfig, committee: list[tuple[float, Teacher, BNStatsLoss]], labels: np.ndarray,
                   ref: dict[str, Any], size: int, augment: dict[str, Any], gen: torch.Generator, b: int, desc: str,
                   progress: bool) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Optimise batch `b` of images (targets `labels`) against its committee of (weight, teacher,
    BN matcher); returns the uint8 NHWC images and a loss row every `log_every` iterations.

    The tensor lives in the normalised space of `ref`, the first teacher's meta (SRe2L's
    parametrisation); each teacher gets the pixels renormalised with its own constants and
    resized to its own size."""
    ref_mean = torch.tensor(ref["mean"], device=cfg.device).view(1, -1, 1, 1)
    ref_std = torch.tensor(ref["std"], device=cfg.device).view(1, -1, 1, 1)
    lo, hi = (0 - ref_mean) / ref_std, (1 - ref_mean) / ref_std
    y = torch.from_numpy(labels).to(cfg.device)
    channels = int(ref["in_channels"])
    x = torch.randn((len(labels), channels, size, size), generator=gen).to(cfg.device).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=cfg.lr, betas=(0.5, 0.9), eps=1e-8)
    rows = []
    bar = tqdm(range(cfg.iterations), desc=desc, disable=not progress, leave=False)
    for it in bar:
        lr = cosine_lr(it, cfg.iterations, cfg.lr)  # as SRe2L
        set_lr(opt, lr)
        pixels = _augment(x, gen, **augment) * ref_std + ref_mean
        total = ce_sum = bn_sum = 0.0
        for w, t, matcher in committee:
            xi = (pixels - torch.tensor(t.meta["mean"], device=cfg.device).view(1, -1, 1, 1)) \
                / torch.tensor(t.meta["std"], device=cfg.device).view(1, -1, 1, 1)
            ts = int(t.meta["image_size"])
            if ts != size:
                xi = F.interpolate(xi, size=(ts, ts), mode="bilinear", align_corners=False)
            matcher.reset()
            ce = F.cross_entropy(t.model(xi), y)
            bn = matcher.loss()
            total = total + w * (ce + cfg.r_bn * bn)
            ce_sum, bn_sum = ce_sum + w * ce.item(), bn_sum + w * bn.item()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():  # keep pixels inside [0, 1]
            x.copy_(torch.max(torch.min(x, hi), lo))
        if it % cfg.log_every == 0 or it == cfg.iterations - 1:
            rows.append({"batch": b, "iteration": it, "lr": lr, "loss": total.item(), "ce": ce_sum,
                         "bn": bn_sum, "committee": " ".join(t.name for _, t, _ in committee)})
            bar.set_postfix(ce=f"{ce_sum:.3f}", bn=f"{bn_sum:.3f}")
    with torch.no_grad():
        pix = (x * ref_std + ref_mean).clamp(0, 1)
        return (pix * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy(), rows


def preview_grid(images: np.ndarray, labels: np.ndarray, max_per_class: int = 10, max_classes: int = 20,
                 cell: int = 64) -> np.ndarray:
    """An RGB preview array: one row per recovered class (up to `max_classes`), up to
    `max_per_class` images each; with one image per class, rows of `max_per_class` classes (up
    to `max_classes` rows), so a 1-per-class ImageNet set is not a one-tile-wide strip."""
    from PIL import Image

    def tile(im: np.ndarray) -> np.ndarray:  # small images magnified pixel by pixel, large ones averaged down
        return np.asarray(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im)
                          .convert("RGB").resize((cell, cell), Image.NEAREST if im.shape[0] <= cell else Image.BOX))

    classes = np.unique(labels)  # the recovered classes (a --classes subset of 1000, say)
    per_class = min(max_per_class, int(np.bincount(labels).max()))
    if per_class == 1:
        order = [int(np.flatnonzero(labels == c)[0]) for c in classes[: max_classes * max_per_class]]
        groups = [images[order[i : i + max_per_class]] for i in range(0, len(order), max_per_class)]
    else:
        groups = [images[labels == c][:per_class] for c in classes[:max_classes]]
    width = max(len(g) for g in groups)
    return np.concatenate([np.concatenate([tile(im) for im in g] + [np.zeros((cell, cell, 3), np.uint8)]
                                          * (width - len(g)), axis=1) for g in groups], axis=0)


def save_grid(path: str | Path, images: np.ndarray, labels: np.ndarray, num_classes: int,
              max_per_class: int = 10, max_classes: int = 20, cell: int = 64) -> Path:
    """`preview_grid` as a PNG at `path`."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(preview_grid(images, labels, max_per_class, max_classes, cell)).save(path)
    return path


# FFCV's DatasetWriter pads the header to one page and writes whole pages (8 MiB by default):
# a beton is at least 2 pages, whatever the pixels. Below this many pixel bytes it is mostly padding.
BETON_MIN_PIXEL_BYTES = 64 << 20


def _maybe_beton(want: bool | None, path: Path, images: np.ndarray, labels: np.ndarray, num_classes: int,
                 progress: bool) -> tuple[Path | None, str]:
    """Write images.beton when asked (True), or when it pays (None); returns (path or None, why)."""
    pixels = int(images.nbytes)
    if want is False:
        return None, "not written (--no-beton)"
    if want is None and pixels < BETON_MIN_PIXEL_BYTES:
        return None, (f"not written: {len(images)} images are {pixels:,} B of pixels and FFCV pads a beton to "
                      "at least 16.8 MB; the torch backend reads the .npz (--beton writes one anyway)")
    try:
        from loaders import write_beton
    except ImportError:  # no FFCV here: the .npz is the output
        if want:
            raise LabelStoreError("--beton needs FFCV: pip install -e '.[ffcv]'") from None
        return None, "not written (FFCV not installed)"
    write_beton(images, path, labels=labels, num_classes=num_classes, progress=progress)
    return path, f"{path.stat().st_size:,} B for {pixels:,} B of pixels"


def recover(cfg: RecoverConfig, progress: bool = True) -> dict[str, Any]:
    """Recover `cfg.ipc` images per class; writes images.npz, preview.png, losses.csv, config."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    teachers = _load_teachers(cfg)
    num_classes = int(teachers[0].meta["num_classes"])
    data = teachers_data(cfg.data, [t.meta for t in teachers], [t.name for t in teachers])
    t0 = time.time()
    images, labels, rows = recover_images(cfg, teachers, progress)
    seconds = time.time() - t0
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = (data or {}).get("class_names") or teachers[0].meta.get("class_names")
    npz = save_npz(out / "images.npz", ImageDataset(images, labels, num_classes, "recovered", names))
    grid = save_grid(out / "preview.png", images, labels, num_classes)
    losses = write_csv(out / "losses.csv", rows)
    beton, beton_note = _maybe_beton(cfg.beton, out / "images.beton", images, labels, num_classes, progress)
    size = int(cfg.image_size or teachers[0].meta["image_size"])
    write_config(npz, "recover", cfg, teachers=[t.meta.get("model") for t in teachers],
                 priors=[t.prior for t in teachers], seconds=round(seconds, 2),
                 batch_size=resolved_batch_size(cfg, num_classes), data=data,
                 crop_scale=list(cfg.crop_scale or default_crop_scale(size)),
                 flip=resolved_flip(cfg.flip, [t.meta for t in teachers]))
    return {"images": npz, "preview": grid, "losses": losses, "beton": beton, "beton_note": beton_note,
            "num_images": len(images), "seconds": seconds, "data": data}
