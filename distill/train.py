"""`distill train`: a student from scratch on distilled images and their stored labels.

Any schedule of `loaders.schedules` (`hald`, `soft`, `hard`, `soft:75,hard:150,soft:75`,
`...|drift`, `blend:...`) through `loaders.ReplayLoader`; the defaults are the papers'
(AdamW lr 1e-3, cosine per step, KL at T=4 for Fashion-MNIST — T=20 is the ImageNet default —,
label smoothing 0.1 and CutMix in hard steps, HALD's label pool without replacement). An
all-hard schedule needs no label file (`distill.hardsteps`). The student is tested on the
real data set recorded with its inputs (label file, else images config) — its test split, or
the validation part squeeze held out —, or on `--test-data`, which must fit that data set;
every epoch is a row of `metrics.csv`; `last.pt` holds what a resumed run needs; the resolved
config is written beside the checkpoint.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.config import config_dict, write_config
from distill.data import ImageDataset, load_npz
from distill.evaluate import accuracy
from distill.inputs import (canonical_spec, check_fits_record, data_record, default_crop_scale, eval_name, eval_set,
                            images_record, match_channels, open_test_set)
from distill.models import build_model, save_checkpoint
from labelstore import CropPolicy, LabelFile, MixPolicy
from labelstore.errors import LabelStoreError

__all__ = ["TrainConfig", "train", "input_settings", "test_set_for"]


@dataclass
class TrainConfig:
    """Settings of `distill train`."""

    images: str = "runs/recover/images.npz"
    # label file from relabel; None: runs/relabel/labels.h5, or none at all for an all-hard schedule
    labels: str | None = None
    out_dir: str = "runs/train"
    model: str = "convnet"
    schedule: str = "hald"
    epochs: int = 300
    pool: str = "without_replacement"  # how stored batches are reused (HALD); cycle | replacement
    temperature: float = 4.0  # KL at T (Fashion-MNIST; T=20 is the ImageNet default)
    lr: float = 1e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    hard_mix: str = "cutmix"  # mixing in hard steps: cutmix | mixup | none
    backend: str = "torch"  # torch (TorchBackend, no workers: fastest for 100 small images) | ffcv
    # real test set; None: the data set recorded with the labels / images; "none": no testing
    test_data: str | None = None
    test_subset: int | None = None
    batch_size: int | None = None  # None: the label file's (soft steps replay its batches); 100 without one
    eval_every: int = 0  # test accuracy every n epochs (0: only at the end)
    checkpoint_every: int = 25  # write last.pt every n epochs (and at the end)
    resume: bool = False
    stop_after: int | None = None  # end this run after n epochs (last.pt kept; --resume continues)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    # replay other pixels than the teacher labelled (another backend, normalisation): refused unless set
    allow_pixel_mismatch: bool = False


DEFAULT_LABELS = "runs/relabel/labels.h5"  # relabel's default output
HARD_BATCH_SIZE = 100  # relabel's default batch size, so a hard student batches as a relabelled one would


def input_settings(labels: LabelFile | None, ds: ImageDataset) -> dict[str, Any]:
    """mean/std/gray the teacher saw (stored by `distill relabel`); the images' own stats otherwise."""
    rec = (labels.user_attrs.get("relabel") or {}) if labels is not None else {}
    if "mean" in rec:
        return {"mean": list(rec["mean"]), "std": list(rec["std"]), "gray": bool(rec.get("gray", False))}
    mean, std = ds.channel_stats()
    return {"mean": mean, "std": std, "gray": ds.in_channels == 1}


def test_set_for(spec: str | None, record: dict | None, ds: ImageDataset, images: str, in_channels: int,
                 subset: int | None, seed: int) -> tuple[ImageDataset | None, str | None]:
    """(test images, split) the student is scored on: `spec`, else the data set `record` names;
    (None, None) for spec "none". A test set must fit the training data (classes, channels, size)."""
    if spec is not None and spec.lower() == "none":
        return None, None
    if spec is None:
        if record is None:
            raise LabelStoreError(
                f"no data set is recorded with {images} (nor with its labels), so there is no test set to score "
                "the student on: pass --test-data <the real test set> (or --test-data none)")
        test, split = eval_set(record)
    elif record is not None and canonical_spec(spec) == record["spec"]:
        test, split = eval_set(record)  # the training data named again: its test split or held-out part
    else:
        test, split = open_test_set(spec, (record or {}).get("image_size")), "test"
        ref = record or data_record(images, ds, evaluated_on="test")
        check_fits_record(ref, test, "the test set")
    return match_channels(test.subset(subset, seed=seed), in_channels), split


def _images_config(images: str) -> dict[str, Any]:
    """What recover wrote beside the images (data record, flip rule); {} for images made otherwise."""
    from distill.config import config_path_for, read_config

    path = config_path_for(images)
    return read_config(path) if path.exists() else {}


def _lr_at(step: int, total: int, base: float) -> float:
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _resume_key(cfg: TrainConfig, fingerprint: str | None, label_bytes: int) -> dict[str, Any]:
    """What must match for last.pt to be continued."""
    d = config_dict(cfg)
    for k in ("resume", "stop_after", "eval_every", "checkpoint_every", "threads", "device", "out_dir",
              "test_subset", "test_data"):
        d.pop(k, None)
    d["fingerprint"], d["label_bytes"] = fingerprint, label_bytes
    return d


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train a student as `cfg` says; returns a summary (test accuracy, seconds, paths, the model).

    Under `torchrun` (WORLD_SIZE > 1) the student is wrapped in DistributedDataParallel and the
    ReplayLoader gives each rank its share of every epoch (the same number of steps on every
    rank); rank 0 tests and writes the checkpoints, metrics and configs.
    """
    from distill.distributed import distributed

    with distributed(cfg.device) as ctx:
        return _train(cfg, progress, ctx)


def _train(cfg: TrainConfig, progress: bool, ctx) -> dict[str, Any]:
    from distill.distributed import barrier
    from distill.relabel import make_backend
    from distill.hardsteps import HardSteps
    from loaders import ReplayLoader, parse_schedule

    main = ctx.is_main
    progress = progress and main
    device = ctx.device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not Path(cfg.images).exists():
        raise LabelStoreError(f"image file {cfg.images} does not exist; make it with `distill recover`")
    all_hard = parse_schedule(cfg.schedule).for_labels(1).label_epochs(cfg.epochs) == 0
    label_path = cfg.labels if cfg.labels is not None else (None if all_hard else DEFAULT_LABELS)
    if label_path is not None and not Path(label_path).exists():
        raise LabelStoreError(f"label file {label_path} does not exist; make it with `distill relabel`"
                              + ("" if cfg.labels is not None else " (or name it with --labels)"))
    ds = load_npz(cfg.images)
    labels = LabelFile(label_path) if label_path is not None else None
    if labels is not None and labels.num_classes != ds.num_classes:
        raise LabelStoreError(f"the label file has {labels.num_classes} classes, the images {ds.num_classes}")
    backend = make_backend(cfg.backend, ds, cfg.images)
    inp = input_settings(labels, ds)
    in_ch = 1 if inp["gray"] else 3
    shared = dict(epochs=cfg.epochs, label_smoothing=cfg.label_smoothing, hard_mix=MixPolicy(cfg.hard_mix),
                  seed=cfg.seed, mean=inp["mean"], std=inp["std"], gray=inp["gray"], device=device)
    if labels is not None:
        side = int(labels.crop_policy.size[0])
        loader = ReplayLoader(labels, backend, cfg.schedule, temperature=cfg.temperature, pool=cfg.pool,
                              batch_size=cfg.batch_size, labels_of_images=ds.labels,
                              allow_pixel_mismatch=cfg.allow_pixel_mismatch, **shared)  # shards by rank itself
        record = (labels.user_attrs.get("relabel") or {}).get("data") or images_record(cfg.images)
    else:  # all hard: fresh crops drawn as relabel would draw them for these images, no label file
        side, img_cfg = ds.image_size, _images_config(cfg.images)
        flip = img_cfg.get("flip", True)  # recover records the teachers' flip rule
        crop = CropPolicy(size=(side, side), scale=default_crop_scale(side), flip_prob=0.5 if flip else 0.0)
        loader = HardSteps(backend, ds.labels, ds.num_classes, parse_schedule(cfg.schedule), crop=crop,
                           batch_size=cfg.batch_size or HARD_BATCH_SIZE, **shared)
        record = img_cfg.get("data")
    # every rank resolves (and so refuses) the test set alike; only rank 0 scores the student
    test, split = test_set_for(cfg.test_data, record, ds, cfg.images, in_ch, cfg.test_subset, cfg.seed)
    acc_key = eval_name(split) if split else "test_acc"
    test = test if main else None

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, ds.num_classes, in_ch, side).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # what the student learned from: an all-hard schedule reads no stored label, whatever file it was given
    label_bytes = 0 if all_hard else Path(label_path).stat().st_size
    stored_epochs = labels.num_epochs if labels is not None else 0
    key = _resume_key(cfg, getattr(backend, "fingerprint", None), label_bytes)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    start_epoch, step, rows, elapsed = 0, 0, [], 0.0
    last = out / "last.pt"
    if cfg.resume and last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if json.loads(state["key"]) != json.loads(json.dumps(key)):
            raise LabelStoreError(f"{last} was written by a run with other settings; resume with the same "
                                  "settings, or start over without --resume (or in another --out)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step, rows, elapsed = state["epoch"], state["step"], json.loads(state["rows"]), state["seconds"]
        if main:  # a message, not progress: --quiet keeps it
            print(f"train: resuming {last} at epoch {start_epoch} of {cfg.epochs}")
    dist_kw = {"world_size": ctx.world_size} if ctx.active else {}
    if main:
        write_config(out / "student.pt", "train", cfg, schedule=str(loader.schedule), label_bytes=label_bytes,
                     stored_epochs=stored_epochs, batch_size=loader.batch_size, input=inp, labels=label_path,
                     data=record, eval_split=split, **dist_kw)
    net = model  # what the steps run: the model itself, or its DDP wrapper (checkpoints hold the model)
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)

    t0 = time.time() - elapsed
    end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, start_epoch + int(cfg.stop_after))
    bar = tqdm(range(start_epoch, end), desc=f"train {loader.schedule}", disable=not progress,
               initial=start_epoch, total=cfg.epochs)
    for epoch in bar:
        net.train()
        loader.set_epoch(epoch)
        loss_sum, n, kinds, gated, seen = 0.0, 0, {}, 0, 0
        for st in loader:
            lr = _lr_at(step, total, cfg.lr)
            for g in opt.param_groups:
                g["lr"] = lr
            loss = st.loss(net(st.images))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(st)
            n += len(st)
            kinds[st.kind] = kinds.get(st.kind, 0) + 1
            if st.gated is not None:
                gated += int(st.gated.sum())
                seen += len(st)
        if ctx.active:  # metrics over all ranks; BN running statistics made rank 0's everywhere
            loss_sum, n, gated, seen = _all_reduce([loss_sum, n, gated, seen], device)
            _sync_buffers(model)
        test_acc = None
        final = epoch == cfg.epochs - 1
        if test is not None and (final or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            test_acc = accuracy(model, test, inp["mean"], inp["std"], side, device=device, progress=False)
        rows.append({"epoch": epoch + 1, "kind": "+".join(sorted(kinds)), "steps": step, "loss": loss_sum / max(n, 1),
                     "lr": lr, "drift_gated": gated / seen if seen else "", acc_key: "" if test_acc is None else test_acc,
                     "seconds": round(time.time() - t0, 2)})
        bar.set_postfix(loss=f"{loss_sum / max(n, 1):.3f}", kind=rows[-1]["kind"],
                        **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
        if main and (final or epoch + 1 == end or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0)):
            _write_last(last, model, opt, epoch + 1, step, rows, time.time() - t0, key)
            _write_metrics(out / "metrics.csv", rows)
    bar.close()
    barrier(ctx)  # every rank returns after rank 0 wrote last.pt and metrics.csv
    seconds = time.time() - t0
    summary = {"metrics": out / "metrics.csv", "seconds": seconds, "schedule": str(loader.schedule),
               "label_bytes": label_bytes, "stored_epochs": stored_epochs, "last": last, "model": model,
               "eval_split": split, "test_acc": None}
    if end < cfg.epochs:
        if labels is not None:
            labels.close()
        if main:
            print(f"train: stopped after epoch {end} of {cfg.epochs}; {last} holds the state (--resume continues)")
        return {**summary, "checkpoint": None, "epochs_done": end}
    acc = next((r.get(acc_key) for r in reversed(rows) if r.get(acc_key, "") != ""), None)
    # named for what it is: test_acc only on a real test set (val_acc on the part squeeze held out)
    accs = {"test_acc": None, acc_key: acc}
    meta = {"model": cfg.model, "num_classes": ds.num_classes, "in_channels": in_ch, "image_size": side,
            "mean": inp["mean"], "std": inp["std"], **accs, "data": record, "test_data": cfg.test_data,
            "schedule": str(loader.schedule), "epochs": cfg.epochs, "label_bytes": label_bytes}
    ckpt = out / "student.pt"
    if main:
        ckpt = save_checkpoint(ckpt, model, meta)
        write_config(ckpt, "train", cfg, schedule=str(loader.schedule), label_bytes=label_bytes,
                     stored_epochs=stored_epochs, batch_size=loader.batch_size, input=inp, labels=label_path,
                     data=record, eval_split=split, **accs, seconds=round(seconds, 2), **dist_kw)
    barrier(ctx)  # student.pt exists when any rank returns
    if labels is not None:
        labels.close()
    if progress and acc is not None:
        print(f"train: {loader.schedule}: {split} top-1 {acc:.4f} after {cfg.epochs} epochs "
              f"({seconds:.1f} s) -> {ckpt}")
    return {**summary, **accs, "checkpoint": ckpt, "epochs_done": cfg.epochs}


def _all_reduce(values: list[float], device: str) -> list[float]:
    """Sums of per-rank numbers over all ranks."""
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: DDP broadcasts them before
    each forward, so the last step leaves each rank with its own; checkpoints and a resumed run
    then start from the same state everywhere."""
    import torch.distributed as dist

    for b in model.buffers():
        dist.broadcast(b, src=0)


def _write_last(path: Path, model, opt, epoch: int, step: int, rows, seconds: float, key) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "rows": json.dumps(rows), "seconds": seconds, "key": json.dumps(key)}, tmp)
    tmp.replace(path)  # atomic: a kill never leaves a half-written last.pt


def _write_metrics(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
