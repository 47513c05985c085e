"""`distill relabel`: label stored crops of a distilled image set with a teacher or a committee.

The labels are made *through the loader* (`loaders.record_labels`): the crops are drawn from
the label file's seed and turned into pixels by the same code `ReplayLoader` runs, so a soft
training step later shows the student exactly the pixels the teacher labelled. A committee's
logits are a weighted sum with CV-DD's weights softmax(prior / T), T the committee temperature
(`--committee-temperature`). Teachers run in eval mode or with batch-specific BatchNorm
statistics (train-mode BN that never updates its running statistics, as CV-DD and HALD
relabel); both, and the committee itself, are `distill.committee`. `budget=` picks the stored
epochs and codec with `labelstore.budget` so the file fits; the drift summary of what was
written is printed.

The run reads top to bottom: `prepare` (images, committee, crops, the key of the file),
reuse or clear an earlier file, `choose_codec` (the budget plan), `write_labels`, `seal`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from distill.backends import make_backend
from distill.committee import Committee, load_committee
from distill.config import write_config
from distill.data import ImageDataset, load_npz
from distill.distributed import DistContext, barrier, broadcast_object, distributed, run_collectively
from distill.inputs import (check_records_agree, default_crop_scale, images_record, resolved_flip, teachers_data,
                            warn_small_crops)
from labelstore import CropPolicy, LabelFile, LabelWriter, MixPolicy, draw_crops, draw_mix, draw_order
from labelstore.errors import LabelStoreError
from labelstore.writer import journal_dir

__all__ = ["RelabelConfig", "relabel", "Job", "prepare", "choose_codec", "write_labels", "seal", "plan_budget",
           "BUDGET_EPOCH_OPTIONS", "codec_name"]

# stored-epoch counts the budget planner considers (those <= the requested maximum)
BUDGET_EPOCH_OPTIONS = (1, 2, 3, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300)


@dataclass
class RelabelConfig:
    """Settings of `distill relabel`; defaults relabel `distill recover`'s output for 300 training epochs."""

    images: str = "runs/recover/images.npz"
    teachers: list[str] = field(default_factory=lambda: ["runs/squeeze/convnet.pt"])
    out: str = "runs/relabel/labels.h5"
    epochs: int = 300  # stored epochs (with a budget: the most the planner may choose)
    batch_size: int = 100
    codec: str = "dense16"  # ignored with a budget (the planner picks it)
    budget: str | None = None  # e.g. "300KB"
    bn: str = "eval"  # "eval" or "batch" (train-mode BN, running statistics untouched)
    priors: list[float] | None = None  # committee priors in %; None = the checkpoints' test (or val) accuracy
    # the committee temperature T of the weights softmax(prior / T) (--committee-temperature; CV-DD relabels with T=10)
    temperature: float = 10.0
    crop_size: int | None = None  # output side of a crop; None = the images' side
    crop_scale: tuple[float, float] | None = None  # None = recover's rule: 0.5-1 up to 64 px, else 0.08-1
    flip: bool | None = None  # flipped crops; None = as the teachers were trained (squeeze --no-flip)
    mix: str = "cutmix"  # "cutmix", "mixup" or "none" (SRe2L relabels CutMix-ed crops)
    backend: str = "torch"  # "torch" (TorchBackend, no workers) or "ffcv" (needs images.beton)
    drift_temperature: float = 1.0  # softmax temperature of the drift report of what was written
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    force: bool = False


def _sample_logits(teacher: Callable, backend, ds: ImageDataset, crop: CropPolicy, mix: MixPolicy, seed: int,
                   batch_size: int, input_kw: dict, epochs: int, max_records: int = 2048) -> np.ndarray:
    """Teacher logits of crops drawn like relabel draws them (epochs 0.., until `max_records`)."""
    from loaders.backend import CropBatch
    from loaders.mixing import to_model_input

    out, sizes = [], np.asarray(backend.image_sizes)
    for e in range(epochs):
        order = draw_order(seed, e, len(ds))
        batches, mixes = [], []
        for b, s in enumerate(range(0, len(order), batch_size)):
            idx = order[s : s + batch_size]
            boxes, flips = draw_crops(crop, seed, e, idx, sizes[idx])
            batches.append(CropBatch(idx, boxes, flips))
            mixes.append(draw_mix(mix, crop.size, seed, e, b, len(idx)))
        for px, m in zip(backend.iter_batches(batches, crop.size), mixes):
            with torch.no_grad():
                out.append(teacher(to_model_input(px, m, **input_kw)).float().cpu().numpy())
        if sum(len(o) for o in out) >= max_records:
            break
    return np.concatenate(out)[:max_records]


def plan_budget(budget: int, *, sample: np.ndarray, num_images: int, num_classes: int, max_epochs: int,
                batch_size: int, mix_kind: str, fingerprint: str | None, attrs: dict, teacher: dict,
                header: dict | None = None):
    """labelstore.budget's plan for a derived-crop label file of this shape; the chosen config
    (or a LabelStoreError when not even one stored epoch fits)."""
    from labelstore import budget as B

    options = sorted({e for e in BUDGET_EPOCH_OPTIONS if e <= max_epochs} | {max_epochs})
    # the skeleton is measured with the header this run writes (teacher, crops, pixels, attrs)
    plan = B.plan(num_images=num_images, num_classes=num_classes, epochs=max_epochs, batch_size=batch_size,
                  budget=budget, sample=sample, crop_bpr={"derived": 0.0}, mix_per_batch=0.0,
                  epoch_options=options, fingerprint=fingerprint, mix_kind=mix_kind, attrs_for=lambda E: attrs,
                  header=header)
    try:
        chosen = plan.chosen
    except LabelStoreError as e:
        smallest = min(plan.configs, key=lambda c: c.predicted_bytes)
        raise type(e)(  # the planner's kind of error (a failed check), with relabel's numbers
            f"budget {budget:,} B is too small for even one stored epoch of {num_images} images x {num_classes} "
            f"classes: the smallest configuration ({smallest.codec_spec}, {smallest.stored_epochs} epoch) needs "
            f"{smallest.predicted_bytes:,} B; raise --budget"
        ) from None
    return plan, chosen


def _data_of(images: str, metas: list[dict], teachers: list[str]) -> dict | None:
    """The data record of the images (recover's config), else the teachers'; they must agree."""
    theirs = teachers_data(None, metas, [str(t) for t in teachers])
    mine = images_record(images)
    if mine is not None and theirs is not None:
        check_records_agree(mine, theirs, f"the images {images}", "the teachers")
    return mine if mine is not None else theirs


def _existing(out: Path, fingerprint: str, cfg_key: dict) -> bool:
    """True when `out` is a finished label file of this run (reuse it); refuse one for other images."""
    with LabelFile(out) as f:
        if f.image_fingerprint and f.image_fingerprint != fingerprint:
            raise LabelStoreError(
                f"{out} holds labels for another image set (fingerprint {f.image_fingerprint[:19]}…, these images "
                f"have {fingerprint[:19]}…); relabel into another --out, or pass --force to overwrite it")
        return f.user_attrs.get("relabel") == cfg_key


def relabel(cfg: RelabelConfig, progress: bool = True) -> dict[str, Any]:
    """Relabel `cfg.images` with `cfg.teachers` into `cfg.out`; returns a summary record.

    Under `torchrun` (WORLD_SIZE > 1) every rank labels the batches it owns (batch % world ==
    rank) of every stored epoch into its own shard journal, and rank 0 merges the shards into
    `cfg.out`; the file equals a one-process run's with the same seed.
    """
    with distributed(cfg.device) as ctx:
        progress = progress and ctx.is_main  # one progress display, rank 0's
        t0 = time.time()
        job = prepare(cfg, ctx)
        # every rank reads the same files here, before anyone writes: they all take the same branch
        if job.out.exists() and not cfg.force and _existing(job.out, job.fingerprint, job.key):
            if ctx.is_main:  # a message, not progress: --quiet keeps it
                print(f"relabel: {job.out} is already complete for these settings; reusing it (--force relabels)")
            return _summary(job.out, job.ds, cfg, t0, reused=True, main=ctx.is_main)
        if job.out.exists() and not cfg.force:
            raise LabelStoreError(f"{job.out} exists with other settings; pass --force to overwrite it or choose "
                                  "another --out")
        _clear(job)
        codec, stored, _ = choose_codec(job)
        job.out.parent.mkdir(parents=True, exist_ok=True)
        rec = write_labels(job, codec, stored, progress)
        if ctx.active:  # one process (rank 0) builds the file, checks the budget, writes the config
            run_collectively(ctx, lambda: seal(job, codec, stored, rec), only_main=True)
        else:
            seal(job, codec, stored, rec)
        return _summary(job.out, job.ds, cfg, t0, reused=False, record=rec, main=ctx.is_main)


@dataclass
class Job:
    """What `prepare` resolves before anything is written: the images, the committee and its
    description, the pixel backend, how crops are drawn and mixed, and the key of the file."""

    cfg: RelabelConfig
    ctx: DistContext
    ds: ImageDataset
    committee: Committee
    teacher: dict[str, Any]  # the committee's JSON description, stored in the file
    backend: Any
    input_kw: dict[str, Any]  # mean, std, device, gray: how pixels become the committee's input
    crop: CropPolicy
    mix: MixPolicy
    out: Path
    fingerprint: str
    key: dict[str, Any]  # what makes two runs the same label file (stored in it; equal key: reused)
    attrs: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.attrs = {"relabel": self.key}

    @property
    def shard(self) -> tuple[int, int] | None:
        """(rank, world size) under torchrun: each rank writes a shard journal of its own."""
        return (self.ctx.rank, self.ctx.world_size) if self.ctx.active else None


def prepare(cfg: RelabelConfig, ctx: DistContext) -> Job:
    """Load the images and the committee, check they fit, and resolve crops, mixing and the key."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    ds = load_npz(cfg.images) if Path(cfg.images).exists() else None
    if ds is None:
        raise LabelStoreError(f"image file {cfg.images} does not exist; make it with `distill recover`")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise LabelStoreError("--epochs and --batch-size must be positive")
    committee, teacher_desc = load_committee(cfg.teachers, ds, cfg.bn, cfg.priors, cfg.temperature, ctx.device)
    backend = make_backend(cfg.backend, ds, cfg.images, device=str(ctx.device))
    gray = ds.in_channels == 1 and all(int(m["in_channels"]) == 1 for m in committee.metas)
    side = int(cfg.crop_size or ds.image_size)
    # crops are drawn from the source images: their side decides what a crop of a given area shows
    scale = tuple(cfg.crop_scale) if cfg.crop_scale else default_crop_scale(ds.image_size)
    if ctx.is_main:
        warn_small_crops(ds.image_size, scale, "relabel")
    flip = resolved_flip(cfg.flip, committee.metas)
    crop = CropPolicy(size=(side, side), scale=scale, flip_prob=0.5 if flip else 0.0)
    data = _data_of(cfg.images, committee.metas, cfg.teachers)
    key = {"images": str(cfg.images), "teacher": teacher_desc, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
           "codec": None if cfg.budget else cfg.codec, "budget": cfg.budget, "crop": crop.to_dict(), "mix": cfg.mix,
           "seed": cfg.seed, "mean": committee.mean[:1] if gray else committee.mean,
           "std": committee.std[:1] if gray else committee.std, "gray": gray, "data": data}
    return Job(cfg, ctx, ds, committee, teacher_desc, backend,
               dict(mean=committee.mean, std=committee.std, device=ctx.device, gray=gray), crop, MixPolicy(cfg.mix),
               Path(cfg.out), backend.fingerprint, json.loads(json.dumps(key)))


def _clear(job: Job) -> None:
    """With --force: drop an earlier run's journal (and, before shards are written, its file)."""
    main, shard = job.ctx.is_main, job.shard
    journal = journal_dir(job.out, shard).parent if shard else journal_dir(job.out)  # the writer owns the name
    if job.cfg.force and journal.exists() and main:
        shutil.rmtree(journal)
    if job.cfg.force and shard and main and job.out.exists():
        job.out.unlink()  # no rank may see the old file once the shards are being written
    barrier(job.ctx)


def choose_codec(job: Job) -> tuple[Any, int, Any]:
    """(codec, stored epochs, plan): `--codec` and `--epochs`, or with `--budget` what the plan
    chose (rank 0 plans; the codec it fits — lowrank: on its sample — is broadcast, so shards agree)."""
    from labelstore.pack import parse_size
    from loaders.contract import pixel_settings  # what record_labels will store in the file

    cfg, ctx, main = job.cfg, job.ctx, job.ctx.is_main
    if not cfg.budget:
        return cfg.codec, cfg.epochs, None
    budget = parse_size(cfg.budget)

    def _plan():
        sample = _sample_logits(job.committee, job.backend, job.ds, job.crop, job.mix, cfg.seed, cfg.batch_size,
                                job.input_kw, min(cfg.epochs, 20))
        kw = job.input_kw
        pixels = pixel_settings(job.backend, crop_size=job.crop.size, mean=kw["mean"], std=kw["std"], gray=kw["gray"],
                                dtype=torch.float32)
        return plan_budget(budget, sample=sample, num_images=len(job.ds), num_classes=job.ds.num_classes,
                           max_epochs=cfg.epochs, batch_size=cfg.batch_size, mix_kind=cfg.mix,
                           fingerprint=job.fingerprint, attrs=job.attrs, teacher=job.teacher,
                           header={"teacher": job.teacher, "crop_policy": job.crop.to_dict(),
                                   "mix_policy": job.mix.to_dict(), "seed": cfg.seed, "pixels": pixels})

    if ctx.active:
        planned = run_collectively(ctx, lambda: _plan() if main else None, only_main=True)
        plan, chosen = planned[0] if main else (None, None)
        codec, stored = broadcast_object(ctx, (chosen.codec, chosen.stored_epochs) if main else None)
    else:
        plan, chosen = _plan()
        codec, stored = chosen.codec, chosen.stored_epochs  # the fitted codec object (lowrank is fitted on the sample)
    if main:  # the plan is the result of --budget, not progress: --quiet shows it too
        print(plan.table())
        print(f"relabel: budget {budget:,} B -> {chosen.codec_spec}, {stored} of {cfg.epochs} epochs stored, "
              f"predicted {chosen.predicted_bytes:,} B (rule: highest fidelity that fits; ties -> more epochs)")
    return codec, stored, plan


def write_labels(job: Job, codec, stored: int, progress: bool) -> dict[str, Any]:
    """Label `stored` epochs through the loader into the file (one process) or this rank's shard;
    returns record_labels' record (summed over the ranks under torchrun)."""
    from loaders import record_labels

    cfg, ctx, ds = job.cfg, job.ctx, job.ds

    def _write() -> dict:
        writer = LabelWriter(job.out, num_classes=ds.num_classes, num_images=len(ds), codec=codec, seed=cfg.seed,
                             image_fingerprint=job.fingerprint, image_sizes=job.backend.image_sizes,
                             crop_policy=job.crop, mix_policy=job.mix, teacher=job.teacher, attrs=job.attrs,
                             overwrite=cfg.force, shard=job.shard)
        with writer:  # a shard's finalize seals its journal; one process's builds the file
            return record_labels(writer, job.backend, job.committee, epochs=stored, batch_size=cfg.batch_size,
                                 progress=progress, **job.input_kw)

    if not ctx.active:
        return _write()
    recs = run_collectively(ctx, _write)
    records, seconds = sum(r["records"] for r in recs), max(r["seconds"] for r in recs)
    rec = dict(recs[0], batches_written=sum(r["batches_written"] for r in recs),
               batches_skipped=sum(r["batches_skipped"] for r in recs), records=records, seconds=seconds,
               records_per_s=round(records / seconds, 1) if records and seconds else 0.0, ranks=ctx.world_size)
    if progress:
        print(f"relabel: {ctx.world_size} ranks wrote {rec['batches_written']} batches ({records} crops), "
              f"{rec['batches_skipped']} already done, {rec['records_per_s']} crops/s; merging the shards")
    return rec


def seal(job: Job, codec, stored: int, rec: dict[str, Any]) -> None:
    """On one process: merge the shards, check the file is within the budget, write its config."""
    from labelstore import merge_shards
    from labelstore.pack import parse_size

    cfg, out = job.cfg, job.out
    if job.shard:
        merge_shards(out)
    if cfg.budget and out.stat().st_size > parse_size(cfg.budget):
        size = out.stat().st_size
        out.unlink()
        raise LabelStoreError(f"the label file came out at {size:,} B, over the budget {cfg.budget}; "
                              "nothing was kept: raise --budget slightly")
    write_config(out, "relabel", cfg, codec=codec if isinstance(codec, str) else codec.get_config(),
                 stored_epochs=stored, teacher=job.teacher, records_per_s=rec["records_per_s"],
                 **({"world_size": job.ctx.world_size} if job.shard else {}))


def codec_name(config: dict) -> str:
    """A codec config as a short spec string: {'id': 'dense_q', 'bits': 8, ...} -> 'dense_q:bits=8'."""
    extra = [f"{k}={v}" for k, v in config.items() if k in ("bits", "k", "rank")]
    return config.get("id", "?") + (":" + ",".join(extra) if extra else "")


def _summary(out: Path, ds: ImageDataset, cfg: RelabelConfig, t0: float, reused: bool, record: dict | None = None,
             main: bool = True) -> dict[str, Any]:
    """The summary record of the label file at `out`; rank 0 also prints it with its drift and plots that."""
    from labelstore.drift import drift_report

    with LabelFile(out) as f:
        codec = f.codec.get_config()
        stored = f.num_epochs
        report = drift_report(f, ds.labels, T=cfg.drift_temperature)
    png = out.with_name(out.stem + ".drift.png")
    if main:  # other ranks of a distributed run: the same record, rank 0 prints and plots
        png = report.plot(png)
        print(f"relabel: {out}: {stored} stored epochs, codec {codec_name(codec)}, {out.stat().st_size:,} B")
        print("drift of the stored labels (HALD local semantic drift):")
        print("  " + report.summary().replace("\n", "\n  "))
    return {"labels": out, "bytes": out.stat().st_size, "stored_epochs": stored, "codec": codec_name(codec),
            "mismatch": report.mismatch, "drift_png": png, "reused": reused, "seconds": time.time() - t0,
            "record": record}
