"""``export``: write a label file back into SRe2L's layout, so existing training code
(SRe2L, LPLD, CV-DD forks) can consume it unchanged.

Each batch becomes ``OUTDIR/epoch_<e>/batch_<b>.tar``, a ``torch.save``d list ``[coords
float32 (B,4), flip bool (B,), mix_index int64 (B,), mix_lam float, mix_bbox [4 ints],
logits fp16 (B,C)]`` (the mix fields None when the batch is not mixed). The per-epoch orders
go to ``sampler_indices_epoch.json`` (LPLD's file). SRe2L's own training code ignores that
file and re-creates its RandomSampler(42) order, so replay with unmodified SRe2L code is exact
only for files whose orders are that order; export checks and warns (``strict``: refuses)
otherwise. A partial epoch is written as the batch files it holds (LPLD's pool layout).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import LabelStoreError
from .importers import boxes_to_coords
from .reader import LabelFile


def export_sre2l(label_path: str | Path, outdir: str | Path, *, image_size=None, progress: bool = True,
                 overwrite: bool = False, strict: bool = False, log=print) -> int:
    """Write the SRe2L layout of ``label_path`` under ``outdir``; returns the number of batch files.

    When the file's orders are not SRe2L's RandomSampler(seed 42) orders, the stock SRe2L loader
    would pair labels with the wrong images: a warning says so (``strict``: LabelStoreError,
    nothing written), and ``sampler_indices_epoch.json`` beside the batches holds the true orders.
    """
    try:
        import torch
    except ImportError:
        raise LabelStoreError("export --to sre2l writes torch.save files and needs torch: pip install torch") from None
    from tqdm import tqdm

    outdir = Path(outdir)
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise LabelStoreError(f"{outdir} is not empty; choose an empty folder or pass --force")
    with LabelFile(label_path) as f:
        if image_size is not None:
            sizes = np.broadcast_to(np.asarray(image_size, np.int64).reshape(-1, 2)[0] if np.ndim(image_size) == 1 else np.asarray(image_size), (f.num_images, 2))
        elif f.image_sizes is not None:
            sizes = f.image_sizes
        else:
            raise LabelStoreError(f"{label_path} stores no image sizes; pass --image-size (SRe2L's coords are relative to it)")
        if not _sre2l_orders_match(f):
            msg = (f"{label_path}'s sample orders are not SRe2L's RandomSampler(seed 42) orders: unmodified SRe2L "
                   "training code re-creates that order and would pair these labels with the wrong images. Train with "
                   "a loader that reads the orders from sampler_indices_epoch.json (written beside the batches, as LPLD "
                   "does), or replay the label file itself with loaders.ReplayLoader")
            if strict:
                raise LabelStoreError(msg + "; --strict: nothing written")
            log(f"warning: {msg}")
        outdir.mkdir(parents=True, exist_ok=True)
        orders = {}
        count = 0
        bar = tqdm(total=len(f), disable=not progress, desc="exporting", unit="batch")
        for e in range(f.num_epochs):
            d = outdir / f"epoch_{e}"
            d.mkdir(exist_ok=True)
            orders[e] = f.order(e).tolist()
            for b in f.stored_batches(e):
                b = int(b)
                bt = f.read_batch(e, b)
                coords = torch.from_numpy(boxes_to_coords(bt.boxes, sizes[bt.indices]))
                flips = torch.from_numpy(np.asarray(bt.flips, bool))
                if bt.mix is None:
                    mix_index, lam, bbox = None, None, None
                else:
                    mix_index = torch.from_numpy(np.asarray(bt.mix.partner, np.int64))
                    lam = float(bt.mix.lam)
                    # labelstore's (y0, x0, y1, x1) is SRe2L's (bbx1, bby1, bbx2, bby2): see importers._common.sre2l_mix
                    bbox = [int(v) for v in bt.mix.box] if bt.mix.kind == "cutmix" else None
                logits = torch.from_numpy(np.clip(bt.logits, -65504, 65504)).half()
                tmp = d / f".batch_{b}.tar.tmp"
                torch.save([coords, flips, mix_index, lam, bbox, logits], tmp)
                os.replace(tmp, d / f"batch_{b}.tar")
                count += 1
                bar.update(1)
        bar.close()
    with open(outdir / "sampler_indices_epoch.json", "w") as fh:
        json.dump({str(e): o for e, o in orders.items()}, fh)
    return count


def _sre2l_orders_match(f: LabelFile) -> bool:
    """Whether every stored epoch's order is the one SRe2L's training code re-creates."""
    from .importers.orders import sre2l_orders

    expected = sre2l_orders(f.num_images, list(range(f.num_epochs)))
    return all(np.array_equal(f.order(e), expected[e]) for e in range(f.num_epochs))
