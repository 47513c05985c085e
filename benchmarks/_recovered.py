"""Shared by the benchmarks that recover image sets: refusing a cache made with other settings,
and judging recovered images by teachers that took no part in recovering them."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from distill.config import read_config
from distill.data import load_npz
from distill.metrics import predict
from distill.teachers import load_teacher


def check_cached(path: Path, want: dict, what: str, prog: str) -> None:
    """Exit with a clear message unless the config recorded beside `path` has `want`'s values:
    a cache made with other settings would otherwise stand in for this run's."""
    rec = read_config(path)["config"]
    off = {k: (rec.get(k), v) for k, v in want.items() if rec.get(k) != v}
    if off:
        diffs = ", ".join(f"{k}={old!r} (this run: {new!r})" for k, (old, new) in off.items())
        sys.exit(f"{prog}: error: the cached {what} {path} was made with {diffs}; "
                 f"use another --out, or delete {path.parent} to make it again")


def recognisability(images: Path, specs: list[str], device: str = "cpu", num_classes: int | None = None) -> dict:
    """Top-1 (%) of every teacher in `specs` on a recovered image set (`distill recover`'s output):
    on all of it, and on the images whose recovery it took no part in, the honest judge.
    recover's losses.csv names each batch's committee; its config the batch size."""
    ds = load_npz(images, num_classes=num_classes)
    batch = np.arange(len(ds)) // int(read_config(images)["batch_size"])
    with open(images.parent / "losses.csv") as f:
        members = {int(r["batch"]): set(r["committee"].split(" ")) for r in csv.DictReader(f)}
    out = {}
    for spec in specs:
        model, meta = load_teacher(spec, device)
        hit = predict(model, ds.images, meta["mean"], meta["std"], int(meta["image_size"]), batch_size=50,
                      device=device, progress=False).argmax(1) == ds.labels
        judged = np.array([spec not in members[int(b)] for b in batch])
        out[meta["model"] if Path(spec).exists() else spec] = {
            "all": 100 * float(hit.mean()), "not_recovered": int(judged.sum()),
            "honest": 100 * float(hit[judged].mean()) if judged.any() else None}
    return out
