"""`distill squeeze`: train one or several teachers on the real training set.

Each teacher becomes a checkpoint (state_dict + model name + num_classes + in_channels +
image size + normalisation + accuracy + the record of its data set) with its resolved config
beside it, and every epoch of every teacher is a row of `metrics.csv`. A source without a
test split (an .npz, a folder without train/ and test/) is evaluated on a class-balanced
validation part held out of it (`val_acc`), never on the images it trained on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from distill.config import write_config
from distill.data import ImageDataset, has_test_split, open_dataset, to_tensor
from distill.inputs import (check_fits_record, data_record, eval_name, holdout_split, open_test_set,
                            warn_small_crops)
from distill.metrics import accuracy
from distill.models import build_model, canonical_name, save_checkpoint
from distill.optim import cosine_lr, set_lr
from distill.tables import write_csv
from labelstore.errors import LabelStoreError

__all__ = ["SqueezeConfig", "squeeze", "train_model", "train_one_epoch", "augment_batch", "random_resized_crop"]


@dataclass
class SqueezeConfig:
    """Settings of `distill squeeze`; defaults train a ConvNet on Fashion-MNIST in minutes on 2 cores."""

    out_dir: str = "runs/squeeze"
    data: str = "fashion-mnist"
    models: list[str] = field(default_factory=lambda: ["convnet"])
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_frac: float = 0.05  # linear warm-up, then cosine decay to zero, per step
    label_smoothing: float = 0.0
    augment: bool = True  # random shift (pad 2) + horizontal flip (unless flip=False)
    flip: bool = True  # off where a mirror image is another class (digits, text); recorded for relabel
    # also RandomResizedCrop with this area range (teachers that will label such crops: relabel's
    # default 0.08-1 crops of 28 px images are far from anything shift+flip shows a teacher)
    crop_scale: tuple[float, float] | None = None
    image_size: int | None = None  # resize an image folder to this; None keeps the data's size
    test_data: str | None = None  # a test set of its own; None: the data's test split, else a held-out part
    val_fraction: float = 0.1  # share of each class held out as validation when there is no test split
    train_subset: int | None = None  # class-balanced subset of the training set (quick runs)
    test_subset: int | None = None
    max_steps: int | None = None  # stop each model after this many steps (quick runs, tests)
    eval_every_epoch: bool = False  # test accuracy after every epoch, not only the last
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Random translation by up to `pad` px (zero padding in normalised space) and random h-flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    offs = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
    out = torch.stack([padded[i, :, a : a + h, b : b + w] for i, (a, b) in enumerate(offs.tolist())])
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        out[mask] = out[mask].flip(-1)
    return out


def random_resized_crop(x: torch.Tensor, gen: torch.Generator, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """A RandomResizedCrop (+ flip) per image, batched as one affine grid_sample (bilinear)."""
    n = x.shape[0]
    area = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)
    logr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, generator=gen)
    w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)  # crop width / image width
    h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    cx = (1 - w) * (2 * torch.rand(n, generator=gen) - 1)  # centre in [-1, 1] coordinates
    cy = (1 - h) * (2 * torch.rand(n, generator=gen) - 1)
    flip = torch.where(torch.rand(n, generator=gen) < (0.5 if flip else 0.0), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_model(model: torch.nn.Module, train: ImageDataset, test: ImageDataset, cfg: SqueezeConfig,
                mean: list[float], std: list[float], name: str = "model",
                progress: bool = True, eval_key: str = "test_acc") -> list[dict[str, Any]]:
    """Train `model` in place with SGD + warm-up/cosine; one metrics row per epoch, its accuracy
    on `test` under `eval_key` (test_acc, or val_acc for a held-out part)."""
    dev = torch.device(cfg.device)
    model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows, step, t0 = [], 0, time.time()
    for epoch in range(cfg.epochs):
        bar = tqdm(range(steps_per_epoch), desc=f"squeeze {name} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not progress, leave=False)
        step, (loss_sum, correct, seen) = train_one_epoch(model, opt, train, rng.permutation(len(train)), cfg,
                                                          mean, std, gen, step, total, bar)
        last = epoch == cfg.epochs - 1 or step >= total
        test_acc = None
        if last or cfg.eval_every_epoch:
            test_acc = accuracy(model, test, mean, std, device=cfg.device, progress=progress)
        rows.append({"model": name, "epoch": epoch + 1, "steps": step,
                     "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
                     eval_key: test_acc, "seconds": round(time.time() - t0, 2)})
        if progress:
            tqdm.write(f"squeeze {name}: epoch {epoch + 1} train_loss {rows[-1]['train_loss']:.4f} "
                       f"train_acc {rows[-1]['train_acc']:.4f}"
                       + (f" {eval_key} {test_acc:.4f}" if test_acc is not None else ""))
        if last:
            break
    return rows


def train_one_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: ImageDataset, order: np.ndarray,
                    cfg: SqueezeConfig, mean: list[float], std: list[float], gen: torch.Generator, step: int,
                    total: int, bar) -> tuple[int, tuple[float, int, int]]:
    """One pass over `train` in `order` (stopping at step `total`), each batch augmented as `cfg`
    says; returns the step count after it and (loss sum, correct, images seen)."""
    dev = torch.device(cfg.device)
    model.train()
    warmup = max(1, int(total * cfg.warmup_frac))  # linear warm-up, then cosine to zero
    loss_sum = correct = seen = 0
    for b in bar:
        if step >= total:
            break
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        x = to_tensor(train.images[idx], mean, std)
        if cfg.augment:
            x = augment_batch(x, gen, flip=cfg.flip)
        if cfg.crop_scale is not None:
            x = random_resized_crop(x, gen, tuple(cfg.crop_scale), flip=cfg.flip)
        x, y = x.to(dev), torch.from_numpy(train.labels[idx]).to(dev)
        set_lr(opt, cosine_lr(step, total, cfg.lr, warmup))
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if b % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    return step, (loss_sum, correct, seen)


def _splits(cfg: SqueezeConfig) -> tuple[ImageDataset, ImageDataset, dict[str, Any]]:
    """(training images, evaluation images, data record): the source's test split, the given
    --test-data (checked against the training data), or a class-balanced held-out part."""
    full = open_dataset(cfg.data, "train", cfg.image_size)
    if cfg.test_data is not None:
        record = data_record(cfg.data, full, evaluated_on="test", image_size=cfg.image_size, test_spec=cfg.test_data)
        test = open_test_set(cfg.test_data, cfg.image_size)
        check_fits_record(record, test, "the test set")
        return full, test, record
    if has_test_split(cfg.data):
        test = open_dataset(cfg.data, "test", cfg.image_size)
        record = data_record(cfg.data, full, evaluated_on="test", image_size=cfg.image_size)
        check_fits_record(record, test, f"the test split of {cfg.data}")
        return full, test, record
    tr, val = holdout_split(full.labels, cfg.val_fraction, cfg.seed)
    hold = {"fraction": cfg.val_fraction, "seed": cfg.seed, "images": len(val)}
    record = data_record(cfg.data, full, evaluated_on="validation", holdout=hold, image_size=cfg.image_size)
    print(f"squeeze: {cfg.data} has no test split; holding out {len(val)} of its {len(full)} images "
          f"({cfg.val_fraction:.0%} of each class) as validation, reported as val_acc "
          "(--test-data gives a real test set)", flush=True)
    return full.subset(indices=tr), full.subset(indices=val), record


def squeeze(cfg: SqueezeConfig, progress: bool = True) -> list[Path]:
    """Train every model of `cfg.models`; returns the checkpoint paths (out_dir/<model>.pt)."""
    if not cfg.models:
        raise LabelStoreError("squeeze needs at least one model (--models convnet resnet18 ...)")
    names = [canonical_name(m) for m in cfg.models]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, test, record = _splits(cfg)
    train = train.subset(cfg.train_subset, seed=cfg.seed)
    test = test.subset(cfg.test_subset, seed=cfg.seed)
    if cfg.crop_scale is not None:
        warn_small_crops(train.image_size, tuple(cfg.crop_scale), "squeeze")
    mean, std = train.channel_stats()  # normalisation goes into every checkpoint
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_rows, paths = [], []
    for i, name in enumerate(names):
        torch.manual_seed(cfg.seed + i)
        stem = name if names.count(name) == 1 else f"{name}-{i}"
        model = build_model(name, train.num_classes, train.in_channels, train.image_size)
        key = eval_name(record["evaluated_on"])
        rows = train_model(model, train, test, cfg, mean, std, stem, progress, eval_key=key)
        acc = rows[-1][key]
        # test_acc stays None without a real test set: CV-DD priors then read val_acc, named so
        meta = {"model": name, "num_classes": train.num_classes, "in_channels": train.in_channels,
                "image_size": train.image_size, "mean": mean, "std": std, **{"test_acc": None, key: acc},
                "data": record, "class_names": train.class_names, "flip": cfg.flip, "epochs": rows[-1]["epoch"],
                "steps": rows[-1]["steps"]}
        path = save_checkpoint(out / f"{stem}.pt", model, meta)
        write_config(path, "squeeze", cfg, model=name, **{key: acc}, data=record,
                     train_images=len(train), eval_images=len(test))
        all_rows += rows
        paths.append(path)
    write_csv(out / "metrics.csv", all_rows)
    return paths
