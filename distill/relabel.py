"""`distill relabel`: label stored crops of a distilled image set with a teacher or a committee.

The labels are made *through the loader* (`loaders.record_labels`): the crops are drawn from
the label file's seed and turned into pixels by the same code `ReplayLoader` runs, so a soft
training step later shows the student exactly the pixels the teacher labelled. A committee's
logits are a weighted sum with CV-DD's weights softmax(prior / T). Teachers run in eval mode
or with batch-specific BatchNorm statistics (train-mode BN that never updates its running
statistics, as CV-DD and HALD relabel). `budget=` picks the stored epochs and codec with
`labelstore.budget` so the file fits; the drift summary of what was written is printed.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.config import write_config
from distill.data import ImageDataset, load_npz
from distill.models import check_class_count, load_teacher
from distill.inputs import check_records_agree, default_crop_scale, images_record, prior_of, warn_small_crops
from distill.recover import committee_weights, resolved_flip, teachers_data
from labelstore import CropPolicy, LabelFile, LabelWriter, MixPolicy, draw_crops, draw_mix, draw_order
from labelstore.writer import journal_dir
from labelstore.errors import LabelStoreError

__all__ = ["RelabelConfig", "relabel", "Committee", "load_committee", "make_backend", "plan_budget",
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
    temperature: float = 10.0  # committee weights softmax(prior / T) (CV-DD relabels with T=10)
    crop_size: int | None = None  # output side of a crop; None = the images' side
    crop_scale: tuple[float, float] | None = None  # None = recover's rule: 0.5-1 up to 64 px, else 0.08-1
    flip: bool | None = None  # flipped crops; None = as the teachers were trained (squeeze --no-flip)
    mix: str = "cutmix"  # "cutmix", "mixup" or "none" (SRe2L relabels CutMix-ed crops)
    backend: str = "torch"  # "torch" (TorchBackend, no workers) or "ffcv" (needs images.beton)
    drift_temperature: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    force: bool = False


class Committee(nn.Module):
    """Weighted sum of several teachers' logits; each teacher sees the pixels in its own
    normalisation and resolution. One teacher is a committee of one (weight 1)."""

    def __init__(self, models: list[nn.Module], metas: list[dict[str, Any]], weights: list[float],
                 mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)
        self.metas, self.weights = metas, [float(w) for w in weights]
        self.mean, self.std = list(mean), list(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        c = x.shape[1]
        m0 = torch.tensor(self.mean[:c], device=x.device).view(1, -1, 1, 1)
        s0 = torch.tensor(self.std[:c], device=x.device).view(1, -1, 1, 1)
        pixels = x * s0 + m0  # back to 0..1, then each teacher's own normalisation
        for model, meta, w in zip(self.models, self.metas, self.weights):
            px = pixels
            if int(meta["in_channels"]) == 3 and c == 1:
                px = px.expand(-1, 3, -1, -1)
            m = torch.tensor(meta["mean"], device=x.device).view(1, -1, 1, 1)
            s = torch.tensor(meta["std"], device=x.device).view(1, -1, 1, 1)
            xi = (px - m) / s
            size = int(meta["image_size"])
            if xi.shape[-1] != size or xi.shape[-2] != size:
                xi = F.interpolate(xi, size=(size, size), mode="bilinear", align_corners=False)
            z = model(xi).float() * w
            out = z if out is None else out + z
        return out


def _batch_bn(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers normalise with each batch's own statistics and never
    update their running statistics (train-mode BN without side effects); all else in eval."""
    model = copy.deepcopy(model).eval()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
            m.track_running_stats = False  # train mode + no tracking: batch stats, buffers untouched
    return model


def load_committee(specs: list[str], ds: ImageDataset, bn: str = "eval", priors: list[float] | None = None,
                   temperature: float = 10.0, device: str = "cpu") -> tuple[Committee, dict[str, Any]]:
    """Load the teachers, check they fit the images, and wrap them as a weighted committee.

    Returns the committee and a JSON-ready description (names, weights, BN mode).
    """
    if not specs:
        raise LabelStoreError("relabel needs at least one teacher (--teachers ckpt.pt [more.pt ...])")
    if bn not in ("eval", "batch"):
        raise LabelStoreError(f"--bn must be 'eval' or 'batch' (batch-specific BN statistics), got {bn!r}")
    models, metas = [], []
    for spec in specs:
        model, meta = load_teacher(spec, device)
        check_class_count(meta, ds.num_classes, f"{ds.name} ({len(ds)} images)")
        if int(meta["in_channels"]) == 1 and ds.in_channels != 1:
            raise LabelStoreError(f"teacher {spec} takes 1-channel images but the images have {ds.in_channels}")
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(_batch_bn(model) if bn == "batch" else model.eval())
        metas.append(meta)
    if len(specs) == 1:
        weights = [1.0]
    else:
        if priors is None:
            if any(prior_of(m) is None for m in metas):
                raise LabelStoreError("a committee needs a prior accuracy per teacher: give --priors (in %) "
                                      "for teachers whose checkpoint has no test or validation accuracy")
            priors = [prior_of(m) for m in metas]
        if len(priors) != len(specs):
            raise LabelStoreError(f"{len(priors)} priors for {len(specs)} teachers; give one prior per teacher")
        weights = committee_weights(list(priors), temperature).tolist()
    first = metas[0]
    mean = first.get("mean") or [0.5] * ds.in_channels
    std = first.get("std") or [0.5] * ds.in_channels
    desc = {"teachers": [str(s) for s in specs], "models": [m["model"] for m in metas],
            "weights": [round(w, 6) for w in weights], "bn": bn,
            "test_acc": [m.get("test_acc") for m in metas]}
    return Committee(models, metas, weights, mean, std), desc


def make_backend(kind: str, ds: ImageDataset, images_path: str | Path):
    """The pixel backend: TorchBackend over the arrays, or FFCVBackend over `images.beton` beside them."""
    if kind == "torch":
        from loaders import TorchBackend

        return TorchBackend(ds.images, ds.labels)
    if kind == "ffcv":
        try:
            from loaders import FFCVBackend
        except ImportError:
            raise LabelStoreError("--backend ffcv needs FFCV: pip install -e '.[ffcv]' (or use --backend torch)") from None
        beton = Path(images_path).with_suffix(".beton")
        if not beton.exists():
            raise LabelStoreError(f"--backend ffcv needs {beton} (`distill recover --beton` writes it); "
                                  "or use --backend torch")
        return FFCVBackend(beton)
    raise LabelStoreError(f"unknown backend {kind!r}; use 'torch' or 'ffcv'")


def _sample_logits(teacher: Callable, backend, ds: ImageDataset, crop: CropPolicy, mix: MixPolicy, seed: int,
                   batch_size: int, input_kw: dict, epochs: int, max_records: int = 2048) -> np.ndarray:
    """Teacher logits of crops drawn like relabel draws them (epochs 0.., until `max_records`)."""
    from loaders import CropBatch, to_model_input

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
    from distill.distributed import distributed

    with distributed(cfg.device) as ctx:
        return _relabel(cfg, progress, ctx)


def _relabel(cfg: RelabelConfig, progress: bool, ctx) -> dict[str, Any]:
    from distill.distributed import barrier, broadcast_object, run_collectively
    from labelstore import merge_shards
    from labelstore.pack import parse_size
    from loaders import record_labels

    main = ctx.is_main
    progress = progress and main  # one progress display, rank 0's
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    ds = load_npz(cfg.images) if Path(cfg.images).exists() else None
    if ds is None:
        raise LabelStoreError(f"image file {cfg.images} does not exist; make it with `distill recover`")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise LabelStoreError("--epochs and --batch-size must be positive")
    committee, teacher_desc = load_committee(cfg.teachers, ds, cfg.bn, cfg.priors, cfg.temperature, ctx.device)
    backend = make_backend(cfg.backend, ds, cfg.images)
    gray = ds.in_channels == 1 and all(int(m["in_channels"]) == 1 for m in committee.metas)
    input_kw = dict(mean=committee.mean, std=committee.std, device=ctx.device, gray=gray)
    side = int(cfg.crop_size or ds.image_size)
    # crops are drawn from the source images: their side decides what a crop of a given area shows
    scale = tuple(cfg.crop_scale) if cfg.crop_scale else default_crop_scale(ds.image_size)
    if main:
        warn_small_crops(ds.image_size, scale, "relabel")
    flip = resolved_flip(cfg.flip, committee.metas)
    crop = CropPolicy(size=(side, side), scale=scale, flip_prob=0.5 if flip else 0.0)
    data = _data_of(cfg.images, committee.metas, cfg.teachers)
    mix = MixPolicy(cfg.mix)
    out = Path(cfg.out)
    fingerprint = backend.fingerprint
    # what makes two runs the same label file (stored in the file; a re-run with it reuses the file)
    key = {"images": str(cfg.images), "teacher": teacher_desc, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
           "codec": None if cfg.budget else cfg.codec, "budget": cfg.budget, "crop": crop.to_dict(), "mix": cfg.mix,
           "seed": cfg.seed, "mean": committee.mean[:1] if gray else committee.mean,
           "std": committee.std[:1] if gray else committee.std, "gray": gray, "data": data}
    key = json.loads(json.dumps(key))
    # every rank reads the same files here, before anyone writes: they all take the same branch
    if out.exists() and not cfg.force and _existing(out, fingerprint, key):
        if main:  # a message, not progress: --quiet keeps it
            print(f"relabel: {out} is already complete for these settings; reusing it (--force relabels)")
        return _summary(out, ds, cfg, None, None, t0, reused=True, progress=progress, main=main)
    if out.exists() and not cfg.force:
        raise LabelStoreError(f"{out} exists with other settings; pass --force to overwrite it or choose another --out")
    shard = (ctx.rank, ctx.world_size) if ctx.active else None
    journal = journal_dir(out, shard).parent if shard else journal_dir(out)  # the writer owns the name
    if cfg.force and journal.exists() and main:
        shutil.rmtree(journal)
    if cfg.force and shard and main and out.exists():
        out.unlink()  # no rank may see the old file once the shards are being written
    barrier(ctx)

    attrs = {"relabel": key}
    codec, stored, plan = cfg.codec, cfg.epochs, None
    if cfg.budget:
        budget = parse_size(cfg.budget)

        def _plan():  # rank 0 plans; the codec it fits (lowrank: on its sample) is broadcast, so shards agree
            from loaders.contract import pixel_settings  # what record_labels will store in the file

            sample = _sample_logits(committee, backend, ds, crop, mix, cfg.seed, cfg.batch_size, input_kw,
                                    min(cfg.epochs, 20))
            return plan_budget(budget, sample=sample, num_images=len(ds), num_classes=ds.num_classes,
                               max_epochs=cfg.epochs, batch_size=cfg.batch_size, mix_kind=cfg.mix,
                               fingerprint=fingerprint, attrs=attrs, teacher=teacher_desc,
                               header={"teacher": teacher_desc, "crop_policy": crop.to_dict(),
                                       "mix_policy": mix.to_dict(), "seed": cfg.seed,
                                       "pixels": pixel_settings(backend, crop_size=crop.size, mean=input_kw["mean"],
                                                                std=input_kw["std"], gray=gray, dtype=torch.float32)})

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
    out.parent.mkdir(parents=True, exist_ok=True)

    def _write() -> dict:
        writer = LabelWriter(out, num_classes=ds.num_classes, num_images=len(ds), codec=codec, seed=cfg.seed,
                             image_fingerprint=fingerprint, image_sizes=backend.image_sizes, crop_policy=crop,
                             mix_policy=mix, teacher=teacher_desc, attrs=attrs, overwrite=cfg.force, shard=shard)
        with writer:  # a shard's finalize seals its journal; one process's builds the file
            return record_labels(writer, backend, committee, epochs=stored, batch_size=cfg.batch_size,
                                 progress=progress, **input_kw)

    if not ctx.active:
        rec = _write()
    else:
        recs = run_collectively(ctx, _write)
        records, seconds = sum(r["records"] for r in recs), max(r["seconds"] for r in recs)
        rec = dict(recs[0], batches_written=sum(r["batches_written"] for r in recs),
                   batches_skipped=sum(r["batches_skipped"] for r in recs), records=records, seconds=seconds,
                   records_per_s=round(records / seconds, 1) if records and seconds else 0.0, ranks=ctx.world_size)
        if progress:
            print(f"relabel: {ctx.world_size} ranks wrote {rec['batches_written']} batches ({records} crops), "
                  f"{rec['batches_skipped']} already done, {rec['records_per_s']} crops/s; merging the shards")

    def _finish() -> None:  # one process (rank 0) builds the file, checks the budget, writes the config
        if shard:
            merge_shards(out)
        if cfg.budget and out.stat().st_size > parse_size(cfg.budget):
            size = out.stat().st_size
            out.unlink()
            raise LabelStoreError(f"the label file came out at {size:,} B, over the budget {cfg.budget}; "
                                  "nothing was kept: raise --budget slightly")
        write_config(out, "relabel", cfg, codec=codec if isinstance(codec, str) else codec.get_config(),
                     stored_epochs=stored, teacher=teacher_desc, records_per_s=rec["records_per_s"],
                     **({"world_size": ctx.world_size} if shard else {}))

    if ctx.active:
        run_collectively(ctx, _finish, only_main=True)
    else:
        _finish()
    return _summary(out, ds, cfg, codec, stored, t0, reused=False, progress=progress, record=rec, plan=plan,
                    main=main)


def codec_name(config: dict) -> str:
    """A codec config as a short spec string: {'id': 'dense_q', 'bits': 8, ...} -> 'dense_q:bits=8'."""
    extra = [f"{k}={v}" for k, v in config.items() if k in ("bits", "k", "rank")]
    return config.get("id", "?") + (":" + ",".join(extra) if extra else "")


def _summary(out: Path, ds: ImageDataset, cfg: RelabelConfig, codec, stored, t0: float, reused: bool,
             progress: bool, record: dict | None = None, plan=None, main: bool = True) -> dict[str, Any]:
    from labelstore.drift import drift_report

    with LabelFile(out) as f:
        codec = f.codec.get_config()
        stored = f.num_epochs
        report = drift_report(f, ds.labels, T=cfg.drift_temperature)
    png = out.with_name(out.stem + ".drift.png")
    if not main:  # other ranks of a distributed run: the same record, rank 0 prints and plots
        return {"labels": out, "bytes": out.stat().st_size, "stored_epochs": stored, "codec": codec_name(codec),
                "mismatch": report.mismatch, "drift_png": png, "reused": reused, "seconds": time.time() - t0,
                "record": record}
    png = report.plot(png)
    print(f"relabel: {out}: {stored} stored epochs, codec {codec_name(codec)}, {out.stat().st_size:,} B")
    print("drift of the stored labels (HALD local semantic drift):")
    print("  " + report.summary().replace("\n", "\n  "))
    return {"labels": out, "bytes": out.stat().st_size, "stored_epochs": stored, "codec": codec_name(codec),
            "mismatch": report.mismatch, "drift_png": png, "reused": reused, "seconds": time.time() - t0,
            "record": record}
