"""`distill evaluate`: top-1 accuracy of a model or checkpoint on a labelled test set.

By default on the data set recorded in the checkpoint (its test split, or the validation part
squeeze held out of it); another data set must fit the recorded one (classes, channels, size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.data import ImageDataset, has_test_split, open_dataset
from distill.inputs import canonical_spec, check_fits_record, eval_set, match_channels, open_test_set, record_of
from distill.metrics import accuracy
from distill.models import check_class_count
from distill.teachers import load_teacher
from labelstore.errors import LabelStoreError

__all__ = ["EvaluateConfig", "evaluate", "check_data_fits"]


@dataclass
class EvaluateConfig:
    """Settings of `distill evaluate`."""

    checkpoint: str
    data: str | None = None  # None: the data set recorded in the checkpoint
    split: str | None = None  # None: the recorded one (test, or the held-out validation part)
    subset: int | None = None  # evaluate on a class-balanced subset of this many images
    batch_size: int = 500
    device: str = "cpu"
    seed: int = 0


def check_data_fits(meta: dict[str, Any], ds: ImageDataset, what: str = "teacher") -> None:
    """LabelStoreError unless the model's classes and channels match the data's."""
    check_class_count(meta, ds.num_classes, ds.name, what)
    if int(meta["in_channels"]) != ds.in_channels:
        raise LabelStoreError(
            f"{what} takes {meta['in_channels']}-channel images, data set {ds.name} has {ds.in_channels}"
        )


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> dict[str, Any]:
    """Accuracy of `cfg.checkpoint` on `cfg.data`/`cfg.split`; returns a result record."""
    model, meta = load_teacher(cfg.checkpoint, cfg.device)
    record = record_of(meta)
    if cfg.data is None and record is None:
        raise LabelStoreError(f"{cfg.checkpoint} records no data set (a pretrained model): name one with --data")
    if cfg.data is None or (record is not None and canonical_spec(cfg.data) == record["spec"]):
        ds, split = eval_set(record, cfg.split)
        data = record["spec"]
    else:  # another data set: it must be one the model can be scored on
        size = record.get("image_size") if record else int(meta["image_size"])
        if cfg.split == "validation":
            raise LabelStoreError(f"--split validation is the part squeeze held out of the training data; "
                                  f"{cfg.data} is not that data: use --split test or train")
        if cfg.split is None:
            ds, split = open_test_set(cfg.data, size), ("test" if has_test_split(cfg.data) else "all")
        else:
            ds, split = open_dataset(cfg.data, cfg.split, size), cfg.split
        if record is not None:
            check_fits_record(record, ds, "the data set")
        data = cfg.data
    ds = match_channels(ds, int(meta["in_channels"]))
    check_data_fits(meta, ds, what="model")
    if cfg.subset:
        ds = ds.subset(cfg.subset, seed=cfg.seed)
    mean, std = meta.get("mean", [0.5] * ds.in_channels), meta.get("std", [0.5] * ds.in_channels)
    acc = accuracy(model, ds, mean, std, int(meta["image_size"]), cfg.batch_size, cfg.device, progress)
    return {"checkpoint": str(Path(cfg.checkpoint)), "model": meta["model"], "data": data,
            "split": split, "images": len(ds), "accuracy": acc}
