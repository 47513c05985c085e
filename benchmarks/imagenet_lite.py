"""The 1000-class case with the real ImageNet teachers (EfficientNet-Lite0/1/2), as one command.

1. Images, --ipc per class of --classes (default every 10th ImageNet class, 100 in all):
   SRe2L recovery by Lite0 and CV-DD recovery by the Lite0/1/2 committee (2 per image index,
   weights softmax(prior / 5), priors = the models' published ImageNet top-1).
2. Recognisability: every Lite model's top-1 on each recovered set, on the images it took no
   part in recovering (the honest judge; recover's losses.csv names each batch's committee).
3. Labels: each set relabelled by each Lite model and by the weighted committee
   (softmax(prior / 10)), batch-specific BatchNorm, CutMix, --S stored epochs, dense16; the
   drift report of each at 1000 classes.
4. Codecs: every codec on the Lite0-relabelled SRe2L labels, learned codecs fitted on a sample
   of the same file and on the committee-relabelled CV-DD labels (`codec_fidelity --labels`).

Writes summary.md, summary.json, codec_fidelity.csv and images.png (the first 10 classes of
each set) under --out; every stage is cached.
On 2 CPU cores one recovery iteration of 100 Lite0 images takes about 40 s in one batch and
12 s in batches of 10, so the default (1000 iterations) is a GPU run:

    python -m benchmarks.imagenet_lite --device cuda            # SRe2L's length
    python -m benchmarks.imagenet_lite --iterations 100 --recover-batch 10 --S 20 --fit 1000   # documented, 92 min CPU
    python -m benchmarks.imagenet_lite --quick                  # smoke run on CPU: 2 classes, 2 iterations
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from distill.cli.recover import class_ids
from distill.config import config_dict
from distill.recover import RecoverConfig, preview_grid, recover
from distill.relabel import RelabelConfig, relabel

from ._recovered import check_cached, recognisability
from ._scope import torch_rng_kept, torch_threads
from .codec_fidelity import label_file_rows

LITE = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
PRIORS = [75.1, 76.7, 77.6]  # published ImageNet-1K top-1 (%) of Lite0/1/2
PROG = "imagenet_lite"
SETS = {"sre2l": "Lite0 (SRe2L)", "cvdd": "Lite0/1/2 committee (CV-DD)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 classes x 1 image, 2 iterations, 2 epochs")
    p.add_argument("--out", default=None, help="results and cache folder (default results/imagenet_lite)")
    p.add_argument("--classes", default="0-999:10", help="ImageNet class ids to recover (recover --classes)")
    p.add_argument("--ipc", type=int, default=1)
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--recover-batch", type=int, default=None,
                   help="images optimised together (default: recover's, all 100 for SRe2L); on 2 CPU cores 10 "
                        "run 3.5x faster per image than 100")
    p.add_argument("--S", type=int, default=100, help="stored epochs per label file")
    p.add_argument("--batch-size", type=int, default=16, help="relabel batch size (CV-DD's 16)")
    p.add_argument("--fit", type=int, default=4096, help="records that fit the learned codecs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    if a.quick:
        a.classes, a.ipc, a.iterations, a.S, a.batch_size, a.fit = "0,500", 1, 2, 2, 2, 2
    return a


RECOVER_KEYS = ("teachers", "method", "ipc", "classes", "iterations", "batch_size", "committee_size", "temperature",
                "priors", "seed")
RELABEL_KEYS = ("teachers", "priors", "temperature", "epochs", "batch_size", "codec", "bn", "mix", "seed")


def recovered(a, root: Path, name: str) -> Path:
    path = root / "images" / name / "images.npz"
    cfg = (RecoverConfig(teachers=LITE[:1], method="sre2l") if name == "sre2l" else
           RecoverConfig(teachers=LITE, method="cvdd", priors=PRIORS, committee_size=2, temperature=5.0))
    cfg = replace(cfg, out_dir=str(path.parent), ipc=a.ipc, classes=class_ids(a.classes), iterations=a.iterations,
                  batch_size=a.recover_batch, data="none", device=a.device, threads=a.threads, beton=False)
    if path.exists():
        check_cached(path, {k: v for k, v in config_dict(cfg).items() if k in RECOVER_KEYS}, "image set", PROG)
    else:
        t = time.time()
        recover(cfg, progress=False)
        print(f"recover {name}: {time.time() - t:.0f} s", flush=True)
    return path


def labelled(a, root: Path, images: Path, name: str, who: str) -> dict:
    teachers, priors = (LITE, PRIORS) if who == "committee" else ([who], None)
    out = root / "labels" / name / f"{who}.h5"
    rc = RelabelConfig(images=str(images), teachers=teachers, priors=priors, temperature=10.0, out=str(out),
                       epochs=a.S, batch_size=a.batch_size, codec="dense16", bn="batch", mix="cutmix",
                       device=a.device, threads=a.threads)
    if out.exists():  # relabel would ask for --force; this command has none, so say what differs
        check_cached(out, {k: v for k, v in config_dict(rc).items() if k in RELABEL_KEYS}, "label file", PROG)
    res = relabel(rc, progress=False)
    return {"file": str(out), "bytes": res["bytes"], "mismatch": res["mismatch"], "seconds": res["seconds"]}


def report(info: dict, root: Path) -> str:
    lines = ["Recognisability: top-1 % of each Lite model on the recovered images it took no part in "
             "recovering, on how many images (and on all of them):", "",
             "| images | " + " | ".join(LITE) + " |", "|---" + "|---:" * len(LITE) + "|"]
    for name, rec in info["recognisability"].items():
        lines.append(f"| {SETS[name]} | " + " | ".join(
            (f"{r['honest']:.1f} on {r['not_recovered']} ({r['all']:.1f} on all)" if r["honest"] is not None
             else f"recovered them ({r['all']:.1f})") for r in (rec[m] for m in LITE)) + " |")
    lines += ["", "Stored crops whose teacher top-1 is not the image's class (drift at 1000 classes, CutMix crops):", "",
              "| images | " + " | ".join(list(LITE) + ["committee"]) + " |", "|---" + "|---:" * (len(LITE) + 1) + "|"]
    for name, labs in info["labels"].items():
        lines.append(f"| {SETS[name]} | " + " | ".join(f"{100 * labs[w]['mismatch']:.1f}%" for w in
                                                        list(LITE) + ["committee"]) + " |")
    text = "\n".join(lines) + "\n"
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(info, indent=1))
    return text


def figure(sets: dict[str, Path], root: Path, classes: int = 10) -> Path:
    """images.png: the first `classes` recovered classes, one row per image set (SRe2L above CV-DD)."""
    import numpy as np
    from PIL import Image

    from distill.data import load_npz

    rows = []
    for images in sets.values():
        ds = load_npz(images, num_classes=1000)
        first = np.unique(ds.labels, return_index=True)[1]  # one image per class, whatever --ipc
        rows.append(preview_grid(ds.images[first], ds.labels[first], max_per_class=classes, max_classes=1, cell=112))
    path = root / "images.png"
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def main(argv=None) -> int:
    a = parse_args(argv)
    with torch_threads(a.threads), torch_rng_kept():
        if a.quick and a.out is None:
            with tempfile.TemporaryDirectory(prefix="imagenet_lite_quick_") as tmp:
                return _run(a, Path(tmp))
        return _run(a, Path(a.out or "results/imagenet_lite"))


def _run(a, root: Path) -> int:
    import csv

    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    info = {"settings": {k: v for k, v in vars(a).items()}, "recognisability": {}, "labels": {}}
    sets = {}
    for name in SETS:
        images = sets[name] = recovered(a, root, name)
        info["recognisability"][name] = recognisability(images, LITE, a.device, num_classes=1000)
        info["labels"][name] = {who: labelled(a, root, images, name, who) for who in list(LITE) + ["committee"]}
    print(report(info, root), flush=True)
    figure(sets, root)
    own = Path(info["labels"]["sre2l"][LITE[0]]["file"])
    other = Path(info["labels"]["cvdd"]["committee"]["file"])
    rows = label_file_rows(own, other, a.fit, 10 ** 9, 1024, 1)
    keys = ["dataset", "codec", "baseline", "bytes_per_record", "ratio_vs_sre2l", "kl_t20", "kl_t1", "top1", "top5"]
    with open(root / "codec_fidelity.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"total {time.time() - t0:.0f} s; {root / 'summary.md'}, {root / 'codec_fidelity.csv'}, {root / 'images.png'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
