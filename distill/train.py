"""`distill train`: a student from scratch on distilled images and their stored labels.

Any schedule of `loaders.schedules` (`hald`, `soft`, `hard`, `soft:75,hard:150,soft:75`,
`...|drift`, `...|correct`, `blend:...`) through `loaders.ReplayLoader`, under a recipe
(`distill.recipes`): `labelstore` by default (AdamW lr 1e-3, cosine per step, KL at the KD
temperature T=4 times T^2 for Fashion-MNIST, label smoothing 0.1 and CutMix in hard steps,
HALD's label pool without replacement), or a paper's own (`--recipe hald | sre2l | cvdd`);
a setting given explicitly overrides the recipe's, and the resolved recipe is recorded. An
all-hard schedule needs no label file (`distill.hardsteps`). The student is tested on the
real data set recorded with its inputs (label file, else images config) — its test split, or
the validation part squeeze held out —, or on `--test-data`, which must fit that data set;
every epoch is a row of `metrics.csv`; `last.pt` holds what a resumed run needs; the resolved
config is written beside the checkpoint.

The run reads top to bottom: `build` (inputs, student, optimiser, resumed state),
`train_one_epoch`, `evaluate_student`, `finish` (checkpoint and summary).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from distill.backends import make_backend
from distill.config import config_dict, config_path_for, read_config, write_config
from distill.data import ImageDataset, load_npz
from distill.distributed import DistContext, all_reduce_sum, barrier, distributed, sync_buffers, wrap_ddp
from distill.hardsteps import HardSteps
from distill.inputs import default_crop_scale, eval_name, images_record, input_settings, test_set_for
from distill.metrics import accuracy
from distill.models import build_model, save_checkpoint
from distill.optim import param_groups, set_lr
from distill.recipes import RECIPE_FIELDS, Recipe, get_recipe, lr_at
from distill.tables import write_csv
from labelstore import CropPolicy, LabelFile, MixPolicy
from labelstore.errors import LabelStoreError
from loaders import ReplayLoader, parse_schedule

__all__ = ["TrainConfig", "train", "input_settings", "test_set_for", "build", "train_one_epoch",
           "evaluate_student", "finish", "Run", "RunState", "EpochStats"]


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
    recipe: str = "labelstore"  # distill.recipes: labelstore | hald | sre2l | cvdd; None below = the recipe's
    # how stored batches are reused: without_replacement (HALD) | without_replacement_per_phase | cycle | replacement
    pool: str | None = None
    # the KD temperature: soft steps' KL at T (--kd-temperature; labelstore: 4 for Fashion-MNIST, the papers' 20)
    temperature: float | None = None
    lr: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    hard_mix: str | None = None  # mixing in hard steps: cutmix | mixup | none
    hard_batch_size: int | None = None  # batch size of all-hard epochs (HALD's 16); the recipe's, else the soft one
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


def resolve_recipe(cfg: TrainConfig) -> tuple[TrainConfig, Recipe]:
    """`cfg` with every setting it leaves to the recipe filled in, and the recipe as it will run."""
    recipe = get_recipe(cfg.recipe)
    given = {k: getattr(cfg, k) for k in RECIPE_FIELDS if getattr(cfg, k) is not None}
    filled = {k: getattr(recipe, k) for k in RECIPE_FIELDS}
    return replace(cfg, **{**filled, **given}), replace(recipe, **given)


def _images_config(images: str) -> dict[str, Any]:
    """What recover wrote beside the images (data record, flip rule); {} for images made otherwise."""
    path = config_path_for(images)
    return read_config(path) if path.exists() else {}


def _resume_key(cfg: TrainConfig, fingerprint: str | None, label_bytes: int) -> dict[str, Any]:
    """What must match for last.pt to be continued."""
    d = config_dict(cfg)
    for k in ("resume", "stop_after", "eval_every", "checkpoint_every", "threads", "device", "out_dir",
              "test_subset", "test_data"):
        d.pop(k, None)
    d["fingerprint"], d["label_bytes"] = fingerprint, label_bytes
    return d


@dataclass
class RunState:
    """Where a run stands; what last.pt holds besides the weights and the optimiser."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv so far
    seconds: float = 0.0  # training time so far, over every resumed part


@dataclass
class Run:
    """One training run as `build` makes it: the inputs, the student, the optimiser, the state."""

    cfg: TrainConfig  # resolved: no setting left to the recipe
    recipe: Recipe  # the recipe as run (explicit settings applied)
    ctx: DistContext
    ds: ImageDataset
    labels: LabelFile | None  # None: an all-hard schedule without a label file
    label_path: str | None
    loader: Any  # loaders.ReplayLoader, or HardSteps for an all-hard schedule without a label file
    input: dict[str, Any]  # mean, std, gray: the teacher's normalisation
    in_channels: int
    side: int
    record: dict[str, Any] | None  # the data record of the training data
    test: ImageDataset | None  # rank 0's test set (None elsewhere, and with --test-data none)
    split: str | None
    label_bytes: int  # the stored labels the student learned from (0 for an all-hard schedule)
    stored_epochs: int
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    out: Path
    key: dict[str, Any]  # what last.pt must match to be resumed
    state: RunState

    @property
    def acc_key(self) -> str:
        return eval_name(self.split) if self.split else "test_acc"

    @property
    def last(self) -> Path:
        return self.out / "last.pt"

    @property
    def dist_kw(self) -> dict[str, Any]:
        return {"world_size": self.ctx.world_size} if self.ctx.active else {}

    def config_extra(self) -> dict[str, Any]:
        """What the configs beside student.pt record besides `cfg`."""
        return dict(schedule=str(self.loader.schedule), recipe_settings=self.recipe.as_dict(), label_bytes=self.label_bytes,
                    stored_epochs=self.stored_epochs, batch_size=self.loader.batch_size, input=self.input,
                    labels=self.label_path, data=self.record, eval_split=self.split)


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    """Train a student as `cfg` says; returns a summary (test accuracy, seconds, paths, the model).

    Under `torchrun` (WORLD_SIZE > 1) the student is wrapped in DistributedDataParallel and the
    ReplayLoader gives each rank its share of every epoch (the same number of steps on every
    rank); rank 0 tests and writes the checkpoints, metrics and configs.
    """
    with distributed(cfg.device) as ctx:
        progress = progress and ctx.is_main
        run = build(cfg, ctx)
        cfg = run.cfg  # resolved
        net = wrap_ddp(run.model, ctx)  # what the steps run; checkpoints hold the model itself
        total = run.loader.total_steps()
        end = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, run.state.epoch + int(cfg.stop_after))
        t0 = time.time() - run.state.seconds
        bar = tqdm(range(run.state.epoch, end), desc=f"train {run.loader.schedule}", disable=not progress,
                   initial=run.state.epoch, total=cfg.epochs)
        for epoch in bar:
            lr_of = lambda step, e=epoch: lr_at(run.recipe, cfg.lr, e, cfg.epochs, step, total)  # noqa: E731
            stats = train_one_epoch(net, run.loader, run.opt, epoch, run.state.step, lr_of)
            run.state.epoch, run.state.step = epoch + 1, stats.step
            if ctx.active:  # metrics over all ranks; BN running statistics made rank 0's everywhere
                stats.loss_sum, stats.n, stats.gated, stats.seen, stats.corrected, stats.soft_seen = all_reduce_sum(
                    [stats.loss_sum, stats.n, stats.gated, stats.seen, stats.corrected, stats.soft_seen], ctx.device)
                sync_buffers(run.model)
            test_acc = evaluate_student(run, epoch)
            run.state.rows.append(stats.row(epoch, run.acc_key, test_acc, time.time() - t0))
            bar.set_postfix(loss=f"{stats.loss_sum / max(stats.n, 1):.3f}", kind=run.state.rows[-1]["kind"],
                            **({"test": f"{test_acc:.3f}"} if test_acc is not None else {}))
            every = cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0
            if ctx.is_main and (epoch == cfg.epochs - 1 or epoch + 1 == end or every):
                run.state.seconds = time.time() - t0
                _save_state(run)
                write_csv(run.out / "metrics.csv", run.state.rows)
        bar.close()
        barrier(ctx)  # every rank returns after rank 0 wrote last.pt and metrics.csv
        return finish(run, end, time.time() - t0, progress)


def build(cfg: TrainConfig, ctx: DistContext) -> Run:
    """Everything a run needs before its first step: the images and labels (or hard steps), the
    test set, the student and its optimiser, the state resumed from last.pt (with --resume),
    and the config written beside student.pt (rank 0)."""
    cfg, recipe = resolve_recipe(cfg)
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
    backend = make_backend(cfg.backend, ds, cfg.images, device=str(device))
    inp = input_settings(labels, ds)
    in_ch = 1 if inp["gray"] else 3
    shared = dict(epochs=cfg.epochs, label_smoothing=cfg.label_smoothing, hard_mix=MixPolicy(cfg.hard_mix),
                  seed=cfg.seed, mean=inp["mean"], std=inp["std"], gray=inp["gray"], device=device)
    if labels is not None:
        side = int(labels.crop_policy.size[0])
        loader = ReplayLoader(labels, backend, cfg.schedule, temperature=cfg.temperature, pool=cfg.pool,
                              batch_size=cfg.batch_size, labels_of_images=ds.labels,
                              hard_batch_size=cfg.hard_batch_size, kd_t_squared=recipe.kd_t_squared,
                              allow_pixel_mismatch=cfg.allow_pixel_mismatch, **shared)  # shards by rank itself
        record = (labels.user_attrs.get("relabel") or {}).get("data") or images_record(cfg.images)
    else:  # all hard: fresh crops drawn as relabel would draw them for these images, no label file
        side, img_cfg = ds.image_size, _images_config(cfg.images)
        flip = img_cfg.get("flip", True)  # recover records the teachers' flip rule
        crop = CropPolicy(size=(side, side), scale=default_crop_scale(side), flip_prob=0.5 if flip else 0.0)
        loader = HardSteps(backend, ds.labels, ds.num_classes, parse_schedule(cfg.schedule), crop=crop,
                           batch_size=cfg.hard_batch_size or cfg.batch_size or HARD_BATCH_SIZE, **shared)
        record = img_cfg.get("data")
    # every rank resolves (and so refuses) the test set alike; only rank 0 scores the student
    test, split = test_set_for(cfg.test_data, record, ds, cfg.images, in_ch, cfg.test_subset, cfg.seed)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, ds.num_classes, in_ch, side).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, recipe.decay_1d), lr=cfg.lr)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # what the student learned from: an all-hard schedule reads no stored label, whatever file it was given
    label_bytes = 0 if all_hard else Path(label_path).stat().st_size
    run = Run(cfg, recipe, ctx, ds, labels, label_path, loader, inp, in_ch, side, record, test if ctx.is_main else None,
              split, label_bytes, labels.num_epochs if labels is not None else 0, model, opt, out,
              _resume_key(cfg, getattr(backend, "fingerprint", None), label_bytes), RunState())
    if cfg.resume and run.last.exists():
        run.state = _load_state(run)
        if ctx.is_main:  # a message, not progress: --quiet keeps it
            print(f"train: resuming {run.last} at epoch {run.state.epoch} of {cfg.epochs}")
    if ctx.is_main:
        write_config(out / "student.pt", "train", cfg, **run.config_extra(), **run.dist_kw)
    return run


@dataclass
class EpochStats:
    """What one epoch of steps adds up to (summed over ranks under torchrun)."""

    step: int  # optimiser steps done after the epoch
    lr: float  # the learning rate of its last step
    loss_sum: float = 0.0  # loss x records
    n: int = 0  # records
    kinds: dict[str, int] = field(default_factory=dict)  # steps per kind (soft, hard, blend, ...)
    gated: int = 0  # records whose soft label the drift gate replaced
    seen: int = 0  # records of gated steps
    corrected: int = 0  # records whose stored label was corrected (|correct)
    soft_seen: int = 0  # records of correcting steps

    def row(self, epoch: int, acc_key: str, acc: float | None, seconds: float) -> dict[str, Any]:
        """The epoch's row of metrics.csv."""
        return {"epoch": epoch + 1, "kind": "+".join(sorted(self.kinds)), "steps": self.step,
                "loss": self.loss_sum / max(self.n, 1), "lr": self.lr,
                "drift_gated": self.gated / self.seen if self.seen else "",
                "corrected": self.corrected / self.soft_seen if self.soft_seen else "", acc_key: "" if acc is None else acc,
                "seconds": round(seconds, 2)}


def train_one_epoch(net: torch.nn.Module, loader, opt: torch.optim.Optimizer, epoch: int, step: int,
                    lr_of) -> EpochStats:
    """Every step of `epoch` from `loader`, at the learning rate `lr_of(global step)`."""
    net.train()
    loader.set_epoch(epoch)
    stats = EpochStats(step=step, lr=lr_of(step))
    for st in loader:
        stats.lr = lr_of(stats.step)
        set_lr(opt, stats.lr)
        loss = st.loss(net(st.images))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        stats.step += 1
        stats.loss_sum += loss.item() * len(st)
        stats.n += len(st)
        stats.kinds[st.kind] = stats.kinds.get(st.kind, 0) + 1
        if st.gated is not None:
            stats.gated += int(st.gated.sum())
            stats.seen += len(st)
        if getattr(st, "corrected", None) is not None:
            stats.corrected += int(st.corrected.sum())
            stats.soft_seen += len(st)
    return stats


def evaluate_student(run: Run, epoch: int) -> float | None:
    """Test accuracy after `epoch` when it is due (every `eval_every` epochs and the last), on rank 0."""
    cfg = run.cfg
    due = epoch == cfg.epochs - 1 or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
    if run.test is None or not due:
        return None
    return accuracy(run.model, run.test, run.input["mean"], run.input["std"], run.side, device=run.ctx.device,
                    progress=False)


def finish(run: Run, end: int, seconds: float, progress: bool) -> dict[str, Any]:
    """The run's summary; after the last epoch also student.pt and its config (rank 0)."""
    cfg, main = run.cfg, run.ctx.is_main
    summary = {"metrics": run.out / "metrics.csv", "seconds": seconds, "schedule": str(run.loader.schedule),
               "label_bytes": run.label_bytes, "stored_epochs": run.stored_epochs, "last": run.last,
               "model": run.model, "eval_split": run.split, "test_acc": None}
    if end < cfg.epochs:
        if run.labels is not None:
            run.labels.close()
        if main:
            print(f"train: stopped after epoch {end} of {cfg.epochs}; {run.last} holds the state (--resume continues)")
        return {**summary, "checkpoint": None, "epochs_done": end}
    key = run.acc_key
    acc = next((r.get(key) for r in reversed(run.state.rows) if r.get(key, "") != ""), None)
    # named for what it is: test_acc only on a real test set (val_acc on the part squeeze held out)
    accs = {"test_acc": None, key: acc}
    meta = {"model": cfg.model, "num_classes": run.ds.num_classes, "in_channels": run.in_channels,
            "image_size": run.side, "mean": run.input["mean"], "std": run.input["std"], **accs, "data": run.record,
            "test_data": cfg.test_data, "schedule": str(run.loader.schedule), "epochs": cfg.epochs,
            "label_bytes": run.label_bytes}
    ckpt = run.out / "student.pt"
    if main:
        ckpt = save_checkpoint(ckpt, run.model, meta)
        write_config(ckpt, "train", cfg, **run.config_extra(), **accs, seconds=round(seconds, 2), **run.dist_kw)
    barrier(run.ctx)  # student.pt exists when any rank returns
    if run.labels is not None:
        run.labels.close()
    if progress and acc is not None:
        print(f"train: {run.loader.schedule}: {run.split} top-1 {acc:.4f} after {cfg.epochs} epochs "
              f"({seconds:.1f} s) -> {ckpt}")
    return {**summary, **accs, "checkpoint": ckpt, "epochs_done": cfg.epochs}


def _load_state(run: Run) -> RunState:
    """The state in last.pt, loaded into the model and optimiser; refused when another run wrote it."""
    state = torch.load(run.last, map_location="cpu", weights_only=True)
    if json.loads(state["key"]) != json.loads(json.dumps(run.key)):
        raise LabelStoreError(f"{run.last} was written by a run with other settings; resume with the same "
                              "settings, or start over without --resume (or in another --out)")
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    return RunState(state["epoch"], state["step"], json.loads(state["rows"]), state["seconds"])


def _save_state(run: Run) -> None:
    """last.pt: weights, optimiser and state, written atomically (a kill never leaves half a file)."""
    s = run.state
    tmp = run.last.with_suffix(".tmp")
    torch.save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict(), "epoch": s.epoch,
                "step": s.step, "rows": json.dumps(s.rows), "seconds": s.seconds, "key": json.dumps(run.key)}, tmp)
    tmp.replace(run.last)
