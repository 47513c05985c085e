"""What a stage's inputs are: the data set they came from, and defaults that fit their images.

A *data record* names the real data set a teacher was trained on (spec, classes, channels,
image shape, how it was evaluated). `distill squeeze` writes it into every checkpoint,
`distill recover` into the images config, `distill relabel` into the label file; `evaluate`
and `train` test on the data set it names, and refuse a test set that does not fit it.
Nothing here falls back to a default data set.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from distill.data import ImageDataset, has_test_split, is_named_dataset, open_dataset
from distill.models import check_class_count
from labelstore.errors import LabelStoreError

if TYPE_CHECKING:
    from labelstore import LabelFile

__all__ = ["canonical_spec", "data_record", "check_fits_record", "check_records_agree", "holdout_split",
           "eval_set", "eval_name", "images_record", "teachers_data", "default_crop_scale", "resolved_flip",
           "smallest_crop_side", "warn_small_crops", "SMALL_CROP_PX", "open_test_set", "record_of", "prior_of",
           "match_channels", "input_settings", "test_set_for"]

SMALL_CROP_PX = 4  # crops whose short side can fall under this many pixels carry little of the image


def canonical_spec(spec: str) -> str:
    """A data-set spec that means the same from any folder: a named set, or an absolute path."""
    return spec.lower().replace("_", "-") if is_named_dataset(spec) else str(Path(spec).resolve())


def data_record(spec: str, ds: ImageDataset, *, evaluated_on: str, holdout: dict | None = None,
                image_size: int | None = None, test_spec: str | None = None) -> dict[str, Any]:
    """The record of the training data `ds` (opened from `spec`); `evaluated_on` is "test" (the
    source's own test split, or `test_spec`) or "validation" (the class-balanced part `holdout`
    describes)."""
    return {"spec": canonical_spec(spec), "name": ds.name, "num_classes": int(ds.num_classes),
            "in_channels": ds.in_channels, "image_shape": [int(s) for s in ds.images.shape[1:3]],
            "class_names": list(ds.class_names) if ds.class_names else None,
            "image_size": image_size, "evaluated_on": evaluated_on, "holdout": holdout,
            "test_spec": canonical_spec(test_spec) if test_spec else None}


def _shape(rec_or_ds) -> tuple[int, int, int, list | None]:
    if isinstance(rec_or_ds, ImageDataset):
        h, w = rec_or_ds.images.shape[1:3]
        return rec_or_ds.num_classes, rec_or_ds.in_channels, (int(h), int(w)), rec_or_ds.class_names
    r = rec_or_ds
    return int(r["num_classes"]), int(r["in_channels"]), tuple(r["image_shape"]), r.get("class_names")


def _describe(c: int, ch: int, hw: tuple[int, int]) -> str:
    return f"{ch}-channel {hw[0]}x{hw[1]} images of {c} classes"


def check_fits_record(record: dict[str, Any], ds: ImageDataset, what: str, fix: str | None = None) -> None:
    """LabelStoreError unless `ds` has the classes, channels and image shape of the training data."""
    c, ch, hw, names = _shape(record)
    dc, dch, dhw, dnames = _shape(ds)
    src = record.get("name") or record["spec"]
    fix = fix or f"test on the test split of the same data set ({record['spec']})"
    if (c, ch, hw) != (dc, dch, dhw):
        raise LabelStoreError(
            f"{what} {ds.name} has {_describe(dc, dch, dhw)}, but the training data {src} had "
            f"{_describe(c, ch, hw)}; {fix}")
    if names and dnames and list(names) != list(dnames):
        raise LabelStoreError(
            f"{what} {ds.name} names its classes {_short(dnames)}, the training data {src} {_short(names)}; "
            f"the class ids would not mean the same: {fix}")


def check_records_agree(a: dict[str, Any], b: dict[str, Any], what_a: str, what_b: str) -> None:
    """LabelStoreError unless two data records describe data of one kind (classes, channels, shape, names)."""
    (c, ch, hw, names), (c2, ch2, hw2, names2) = _shape(a), _shape(b)
    if (c, ch, hw) != (c2, ch2, hw2) or (names and names2 and list(names) != list(names2)):
        raise LabelStoreError(
            f"{what_a} belongs to {a['spec']} ({_describe(c, ch, hw)}), {what_b} to {b['spec']} "
            f"({_describe(c2, ch2, hw2)}{'' if not names2 else ', classes ' + _short(names2)}); "
            "use inputs made from one data set")


def _short(names: list[str]) -> str:
    return "[" + ", ".join(map(str, names[:4])) + (", ...]" if len(names) > 4 else "]")


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: `fraction` of every class (at least one image) held out."""
    if not 0 < fraction < 1:
        raise LabelStoreError(f"the validation fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng([int(seed), 0x56414C])  # its own stream: subsets use the seed too
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < 2:
            raise LabelStoreError(f"class {c} has {len(idx)} image; holding out a validation part needs two "
                                  "per class: give a real test set with --test-data")
        val.append(idx[: max(1, int(round(fraction * len(idx))))])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def eval_set(record: dict[str, Any], split: str | None = None) -> tuple[ImageDataset, str]:
    """The real images `record` says its model is evaluated on: (data set, split name).

    `split` None: the record's own ("test", or the held-out "validation" part); "train" gives the
    images the model was trained on (without the held-out part)."""
    split = split or record.get("evaluated_on")
    if split is None:
        raise LabelStoreError(f"the recorded data set {record['spec']} has no test split and no part of it was held "
                              "out (squeeze holds one out since records began): give a real test set (--data / --test-data)")
    spec, size = record["spec"], record.get("image_size")
    if split == "test":
        if record.get("test_spec"):  # squeeze --test-data: a test set of its own
            ds = open_test_set(record["test_spec"], size)
            check_fits_record(record, ds, "the recorded test set")
            return ds, "test"
        if not has_test_split(spec):
            raise LabelStoreError(f"{spec} has no test split (the model was evaluated on a held-out validation "
                                  "part): use --split validation, or give a test set with --data")
        return open_dataset(spec, "test", size), "test"
    if split not in ("train", "validation"):
        raise LabelStoreError(f"unknown split {split!r}; use train, test or validation")
    ds = open_dataset(spec, "train", size)
    hold = record.get("holdout")
    if hold is None:
        if split == "validation":
            raise LabelStoreError(f"no validation part was held out of {spec}; use --split test")
        return ds, "train"
    train, val = holdout_split(ds.labels, hold["fraction"], hold["seed"])
    if len(val) != hold.get("images", len(val)):
        raise LabelStoreError(f"{spec} changed since the model was trained: the held-out part has {len(val)} "
                              f"images, {hold['images']} were recorded; evaluate on a test set with --data")
    return ds.subset(indices=train if split == "train" else val), split


def eval_name(split: str) -> str:
    """The result key of an accuracy measured on `split`: test_acc, val_acc or train_acc."""
    return {"test": "test_acc", "validation": "val_acc", "train": "train_acc", "all": "acc"}[split]


def images_record(images: str | Path) -> dict[str, Any] | None:
    """The data record `distill recover` wrote into the images config beside `images` (None without)."""
    from distill.config import config_path_for, read_config

    path = config_path_for(images)
    if not path.exists():
        return None
    try:
        return read_config(path).get("data")
    except (OSError, ValueError) as e:
        raise LabelStoreError(f"cannot read the images config {path}: {e}; delete it or re-run distill recover")


def teachers_data(cfg_data: str | None, metas: list[dict[str, Any]], names: list[str]) -> dict[str, Any] | None:
    """The data record the teachers share (checked between them and against `cfg_data` if given);
    recover writes it beside the images, relabel into the label file."""
    records = [(n, record_of(m)) for n, m in zip(names, metas)]
    known = [(n, r) for n, r in records if r is not None]
    for n, r in known[1:]:
        check_records_agree(known[0][1], r, f"teacher {known[0][0]}", f"teacher {n}")
    if cfg_data is not None and cfg_data.lower() == "none":
        return None
    if cfg_data is None:
        return known[0][1] if known else None
    ds = open_dataset(cfg_data, "train", known[0][1].get("image_size") if known else None)
    for n, r in known:
        check_fits_record(r, ds, "--data", fix=f"recover from teachers trained on it, or drop --data (teacher {n})")
    for n, m in zip(names, metas):
        check_class_count(m, ds.num_classes, cfg_data)
    return known[0][1] if known else data_record(cfg_data, ds, evaluated_on="test" if has_test_split(cfg_data) else None)


def default_crop_scale(side: int) -> tuple[float, float]:
    """RandomResizedCrop area range that fits `side`-px images: 0.5-1 up to 64 px (a 0.08 crop of
    an 8 px image is 2x2 px), SRe2L's 0.08-1 above. recover and relabel share it."""
    return (0.5, 1.0) if side <= 64 else (0.08, 1.0)


def resolved_flip(flip: bool | None, metas: list[dict[str, Any]]) -> bool:
    """`flip`, or as the teachers were trained: off if any was trained without flips (squeeze --no-flip)."""
    if flip is not None:
        return bool(flip)
    return all(m.get("flip", True) for m in metas)


def smallest_crop_side(side: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> float:
    """The short side in px of the smallest crop RandomResizedCrop can draw from a `side`-px image."""
    return math.sqrt(scale[0] * side * side * min(ratio[0], 1 / ratio[1]))


def warn_small_crops(side: int, scale: tuple[float, float], stage: str) -> None:
    """A UserWarning when crops of `side`-px images can be under SMALL_CROP_PX pixels on a side."""
    small = smallest_crop_side(side, scale)
    if small < SMALL_CROP_PX:
        lo = default_crop_scale(side)[0]
        warnings.warn(f"{stage}: crop scale {scale[0]:g}-{scale[1]:g} on {side} px images draws crops down to "
                      f"{small:.1f} px a side, which show almost nothing of the image; "
                      f"--crop-scale {lo:g} 1 keeps them at {smallest_crop_side(side, (lo, 1.0)):.1f} px or more",
                      UserWarning, stacklevel=3)


def open_test_set(spec: str, image_size: int | None = None) -> ImageDataset:
    """A data set given as a test set: its test split when it has one, else all of it."""
    return open_dataset(spec, "test" if has_test_split(spec) else "all", image_size)


def record_of(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The data record of a checkpoint's meta; None for a pretrained model (no data set known).
    Checkpoints from before records held only the spec string: rebuilt from their meta."""
    data = meta.get("data")
    if isinstance(data, dict):
        return data
    if not isinstance(data, str) or not data:
        return None
    side = int(meta["image_size"])
    return {"spec": canonical_spec(data), "name": data, "num_classes": int(meta["num_classes"]),
            "in_channels": int(meta["in_channels"]), "image_shape": [side, side],
            "class_names": meta.get("class_names"), "image_size": None,
            # its test_acc was measured on the training images when the source had no test split
            "evaluated_on": "test" if has_test_split(data) else None, "holdout": None, "test_spec": None}


def prior_of(meta: dict[str, Any]) -> float | None:
    """A checkpoint's accuracy on held-out images in %: test_acc, else val_acc (None: unknown)."""
    for key in ("test_acc", "val_acc"):
        if meta.get(key) is not None:
            return 100.0 * float(meta[key])
    return None


def match_channels(ds: ImageDataset, in_channels: int) -> ImageDataset:
    """Grey images repeated to 3 channels for a 3-channel model (as relabel showed it them)."""
    if ds.in_channels == 1 and in_channels == 3:
        return ImageDataset(np.repeat(ds.images, 3, axis=-1), ds.labels, ds.num_classes, ds.name, ds.class_names)
    return ds


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
