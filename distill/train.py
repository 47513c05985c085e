"""`distill train`: a student from scratch on distilled images and their stored labels.

Any schedule of `loaders.schedules` (`hald`, `soft`, `hard`, `soft:75,hard:150,soft:75`,
`...|drift`, `blend:...`) through `loaders.ReplayLoader`; the defaults are the papers'
(AdamW lr 1e-3, cosine per step, KL at T=4 for Fashion-MNIST — T=20 is the ImageNet default —,
label smoothing 0.1 and CutMix in hard steps, HALD's label pool without replacement). The
student is tested on the real test set; every epoch is a row of `metrics.csv`; `last.pt`
holds what a resumed run needs; the resolved config is written beside the checkpoint.
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
from distill.data import ImageDataset, load_npz, open_dataset
from distill.evaluate import accuracy
from distill.models import build_model, check_class_count, save_checkpoint
from labelstore import LabelFile, MixPolicy
from labelstore.errors import LabelStoreError

__all__ = ["TrainConfig", "train", "input_settings", "test_set_for"]


@dataclass
class TrainConfig:
    """Settings of `distill train`."""

    images: str = "runs/recover/images.npz"
    labels: str = "runs/relabel/labels.h5"
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
    test_data: str | None = "fashion-mnist"
    test_subset: int | None = None
    eval_every: int = 0  # test accuracy every n epochs (0: only at the end)
    checkpoint_every: int = 25  # write last.pt every n epochs (and at the end)
    resume: bool = False
    stop_after: int | None = None  # end this run after n epochs (last.pt kept; --resume continues)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


def input_settings(labels: LabelFile, ds: ImageDataset) -> dict[str, Any]:
    """mean/std/gray the teacher saw (stored by `distill relabel`); the images' own stats otherwise."""
    rec = labels.user_attrs.get("relabel") or {}
    if "mean" in rec:
        return {"mean": list(rec["mean"]), "std": list(rec["std"]), "gray": bool(rec.get("gray", False))}
    mean, std = ds.channel_stats()
    return {"mean": mean, "std": std, "gray": ds.in_channels == 1}


def test_set_for(spec: str, num_classes: int, in_channels: int, subset: int | None, seed: int) -> ImageDataset:
    """The real test split of `spec`, class count checked, channels matched to the student."""
    test = open_dataset(spec, "test")
    check_class_count({"num_classes": num_classes}, test.num_classes, spec, what="student")
    test = test.subset(subset, seed=seed)
    if test.in_channels == 1 and in_channels == 3:
        test = ImageDataset(np.repeat(test.images, 3, axis=-1), test.labels, test.num_classes, test.name)
    return test


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
    from loaders import ReplayLoader

    main = ctx.is_main
    progress = progress and main
    device = ctx.device

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if not Path(cfg.images).exists():
        raise LabelStoreError(f"image file {cfg.images} does not exist; make it with `distill recover`")
    if not Path(cfg.labels).exists():
        raise LabelStoreError(f"label file {cfg.labels} does not exist; make it with `distill relabel`")
    ds = load_npz(cfg.images)
    labels = LabelFile(cfg.labels)
    if labels.num_classes != ds.num_classes:
        raise LabelStoreError(f"the label file has {labels.num_classes} classes, the images {ds.num_classes}")
    backend = make_backend(cfg.backend, ds, cfg.images)
    inp = input_settings(labels, ds)
    side = int(labels.crop_policy.size[0])
    in_ch = 1 if inp["gray"] else 3
    loader = ReplayLoader(labels, backend, cfg.schedule, epochs=cfg.epochs, temperature=cfg.temperature,
                          mean=inp["mean"], std=inp["std"], gray=inp["gray"], device=device, seed=cfg.seed,
                          pool=cfg.pool, label_smoothing=cfg.label_smoothing, hard_mix=MixPolicy(cfg.hard_mix),
                          labels_of_images=ds.labels)  # under torch.distributed it shards by rank itself
    test = None
    if cfg.test_data and main:  # only rank 0 tests
        test = test_set_for(cfg.test_data, ds.num_classes, in_ch, cfg.test_subset, cfg.seed)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, ds.num_classes, in_ch, side).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label_bytes = Path(cfg.labels).stat().st_size
    key = _resume_key(cfg, labels.image_fingerprint, label_bytes)
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
        if progress:
            print(f"train: resuming {last} at epoch {start_epoch} of {cfg.epochs}")
    dist_kw = {"world_size": ctx.world_size} if ctx.active else {}
    if main:
        write_config(out / "student.pt", "train", cfg, schedule=str(loader.schedule), label_bytes=label_bytes,
                     stored_epochs=labels.num_epochs, batch_size=loader.batch_size, input=inp, **dist_kw)
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
                     "lr": lr, "drift_gated": gated / seen if seen else "", "test_acc": "" if test_acc is None else test_acc,
                     "seconds": round(time.time() - t0, 2)})
        bar.set_postfix(loss=f"{loss_sum / max(n, 1):.3f}", kind=rows[-1]["kind"],
                        **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
        if main and (final or epoch + 1 == end or (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0)):
            _write_last(last, model, opt, epoch + 1, step, rows, time.time() - t0, key)
            _write_metrics(out / "metrics.csv", rows)
    bar.close()
    barrier(ctx)  # every rank returns after rank 0 wrote last.pt and metrics.csv
    seconds = time.time() - t0
    if end < cfg.epochs:
        labels.close()
        if progress:
            print(f"train: stopped after epoch {end} of {cfg.epochs}; {last} holds the state (--resume continues)")
        return {"checkpoint": None, "last": last, "metrics": out / "metrics.csv", "test_acc": None,
                "seconds": seconds, "schedule": str(loader.schedule), "label_bytes": label_bytes,
                "stored_epochs": labels.num_epochs, "epochs_done": end, "model": model}
    test_acc = next((r["test_acc"] for r in reversed(rows) if r["test_acc"] != ""), None)
    meta = {"model": cfg.model, "num_classes": ds.num_classes, "in_channels": in_ch, "image_size": side,
            "mean": inp["mean"], "std": inp["std"], "test_acc": test_acc, "data": cfg.test_data,
            "schedule": str(loader.schedule), "epochs": cfg.epochs, "label_bytes": label_bytes}
    ckpt = out / "student.pt"
    if main:
        ckpt = save_checkpoint(ckpt, model, meta)
        write_config(ckpt, "train", cfg, schedule=str(loader.schedule), label_bytes=label_bytes,
                     stored_epochs=labels.num_epochs, batch_size=loader.batch_size, input=inp, test_acc=test_acc,
                     seconds=round(seconds, 2), **dist_kw)
    barrier(ctx)  # student.pt exists when any rank returns
    labels.close()
    if progress and test_acc is not None:
        print(f"train: {loader.schedule}: test top-1 {test_acc:.4f} after {cfg.epochs} epochs "
              f"({seconds:.1f} s) -> {ckpt}")
    return {"checkpoint": ckpt, "metrics": out / "metrics.csv", "test_acc": test_acc, "seconds": seconds,
            "schedule": str(loader.schedule), "label_bytes": label_bytes, "stored_epochs": labels.num_epochs,
            "last": last, "epochs_done": cfg.epochs, "model": model}


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
