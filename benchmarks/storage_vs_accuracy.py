"""Storage vs accuracy: student top-1 on Fashion-MNIST at 10 images per class against label bytes.

Image sets: 10 random real images per class, SRe2L-recovered and CV-DD-recovered images.
For each set, the labels are made once through `distill relabel` (dense fp16, the most
stored epochs asked for) and transcoded into every (stored epochs S, codec) of the grid:
the first S epochs are exactly what a relabel with S epochs writes (crops, orders and mixes
are drawn per epoch from the seed), so only the teacher work is shared. Every file is
measured in bytes on disk; a student (`distill train`) is trained on it with each schedule
(all-soft, HALD, all-hard, drift-gated, shorter hard phases, a loss mix, HALD-auto) and
several seeds and tested on the real test set. A committee of the two teachers (weights
softmax(prior / 10), CV-DD's) is compared with teacher 0 alone. Writes CSV + JSON + PNG
under --out (default results/storage_vs_accuracy/).

The defaults are the full sweep of docs/benchmarks.md (531 students of a 128-channel ConvNet,
300 epochs, batch 20): about 30 s per student with 12 sharing one H100, about 120 s each on
2 CPU cores (hours; results.csv is written as runs finish and a re-run resumes).

    python -m benchmarks.storage_vs_accuracy --quick      # < 1 min smoke run on CPU (2 cores), from scratch
    python -m benchmarks.storage_vs_accuracy --device cuda --workers 12 --threads 1
    # a subset on CPU, with a cached teacher:
    python -m benchmarks.storage_vs_accuracy --sources real --teacher results/teachers/convnet.pt --no-committee \
        --S 1 2 5 20 --codecs dense16 --schedules all-soft HALD HALD-auto --workers 2 --threads 1
    # summary and plot of a results.csv measured elsewhere (same grid flags):
    python -m benchmarks.storage_vs_accuracy --summarise-only --out results/sweep
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from distill.data import ImageDataset, fashion_mnist, save_npz
from distill.recover import RecoverConfig, recover
from distill.relabel import RelabelConfig, relabel
from distill.squeeze import SqueezeConfig, squeeze
from distill.config import config_dict, read_config
from distill.recipes import RECIPES, get_recipe
from distill.train import TrainConfig, train
from labelstore import LabelFile, LabelStoreError, LabelWriter, parse_codec_spec

from ._scope import torch_rng_kept, torch_threads
from ._sva_report import DEFAULT_RECIPE, summarise

SCHEDULES = {"all-soft": "soft", "HALD": "hald", "all-hard": "hard", "drift-gated": "soft|drift",
             "HALD-drift": "hald|drift", "HALD-short": "hald:hard=0.2", "blend": "blend:w=0.7",
             "HALD-auto": "hald:hard=auto", "all-soft+correct": "soft|correct", "HALD+correct": "hald|correct",
             "HALD-auto+correct": "hald:hard=auto|correct"}
DEFAULT_SCHEDULES = ["all-soft", "HALD", "all-hard", "drift-gated", "HALD-short", "blend", "HALD-auto"]
CODECS = ("dense16", "dense_q:bits=8", "dense_q:bits=4", "topk:k=3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: real images, S 1 and 5, 2 schedules, 1 seed")
    p.add_argument("--sources", nargs="+", default=["real", "sre2l", "cvdd"], choices=["real", "sre2l", "cvdd"])
    p.add_argument("--S", nargs="+", type=int, default=[1, 2, 5, 20, 50, 300], help="stored epochs")
    p.add_argument("--codecs", nargs="+", default=list(CODECS))
    p.add_argument("--codec-S", nargs="+", type=int, default=[1, 5, 20, 300],
                   help="stored epochs at which the non-fp16 codecs are run (default %(default)s)")
    p.add_argument("--codec-schedules", nargs="+", default=["all-soft", "drift-gated"], choices=list(SCHEDULES),
                   help="schedules run on the non-fp16 codecs (default %(default)s)")
    p.add_argument("--schedules", nargs="+", default=DEFAULT_SCHEDULES, choices=list(SCHEDULES),
                   help="HALD-drift = hald|drift, HALD-short = hald:hard=0.2 (a 60-epoch hard phase at 300), "
                        "blend = blend:w=0.7 (every step 0.7 soft + 0.3 hard loss), "
                        "HALD-auto = hald:hard=auto (hard share 0.5 / S), <name>+correct = <schedule>|correct "
                        "(drifting crops' labels corrected)")
    p.add_argument("--recipes", nargs="+", default=[DEFAULT_RECIPE],
                   help=f"student recipes (distill.recipes: {', '.join(RECIPES)}, or a spec such as "
                        "'hald:kd_t_squared=true' for an ablation); every schedule runs under each (default %(default)s)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0,
                   help="student seeds run are first-seed ... first-seed + seeds - 1 (add seeds to a grid measured elsewhere)")
    p.add_argument("--epochs", type=int, default=300, help="student epochs")
    p.add_argument("--committee", action=argparse.BooleanOptionalAction, default=True,
                   help="also compare a CV-DD committee with a single teacher (real images)")
    p.add_argument("--test-subset", type=int, default=None, help="test on a class-balanced subset")
    p.add_argument("--teacher", nargs="+", default=None, metavar="CKPT",
                   help="existing teacher checkpoint(s) (e.g. from `distill squeeze`) instead of training them here; "
                        "two or more enable the committee")
    p.add_argument("--teacher-model", default="convnet", help="architecture of teachers trained here")
    p.add_argument("--teacher-subset", type=int, default=0, help="training images per teacher (0: all 60k)")
    p.add_argument("--teacher-epochs", type=int, default=8)
    p.add_argument("--teacher-crop-scale", type=float, nargs=2, default=[0.08, 1.0],
                   help="teachers also train on RandomResizedCrops of this area range (1 1: shift + flip only)")
    p.add_argument("--recover-iterations", type=int, default=1000)
    p.add_argument("--model", default="convnet", help="student architecture")
    p.add_argument("--batch-size", type=int, default=20,
                   help="relabel batch size, hence the students' (soft steps replay whole stored batches)")
    p.add_argument("--mix", default="auto", choices=["auto", "cutmix", "none", "mixup"],
                   help="relabel mixing; auto: none on real images, CutMix on recovered ones (measured best for each)")
    p.add_argument("--hard-mix", default="none", choices=["cutmix", "none", "mixup"],
                   help="mixing in the students' hard steps (all-hard, HALD's hard phase) under the labelstore "
                        "recipe; the papers' recipes use their own (hald: CutMix)")
    p.add_argument("--out", default=None,
                   help="results folder (default results/storage_vs_accuracy, with --quick results/storage_vs_accuracy-quick)")
    p.add_argument("--cache-dir", default=None,
                   help="teachers, image sets and label files (default: the --out folder; with --quick a fresh "
                        "temporary folder, so a smoke run always trains and relabels)")
    p.add_argument("--summarise-only", action="store_true",
                   help="train nothing: summary and plot from the --out folder's results.csv (e.g. one copied back "
                        "from another machine), with this command's --sources/--S/--schedules/--codecs")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default 2; --quick: 1)")
    p.add_argument("--device", default="cpu", help="torch device of every step (cuda: students share one GPU)")
    p.add_argument("--workers", type=int, default=1, help="student runs in parallel (processes)")
    a = p.parse_args(argv)
    for spec in a.recipes:
        try:
            get_recipe(spec)
        except LabelStoreError as e:
            p.error(str(e))
    if a.teacher and len(a.teacher) < 2 and (a.committee or "cvdd" in a.sources):
        if "cvdd" in a.sources:
            p.error("CV-DD recovery needs two teachers: pass two --teacher checkpoints or drop cvdd from --sources")
        a.committee = False  # one given teacher: nothing to compare a committee with
    if a.quick:
        a.sources, a.S, a.codecs, a.schedules, a.seeds = ["real"], [1, 5], ["dense16", "dense_q:bits=4"], ["all-soft", "HALD"], 1
        a.epochs, a.test_subset, a.teacher_subset, a.teacher_epochs, a.committee = 60, 2000, 5000, 1, False
        a.model = a.teacher_model = "convnet-w32"  # about 10x cheaper on CPU than the 128-channel ConvNet
    if a.out is None:
        a.out = "results/storage_vs_accuracy" + ("-quick" if a.quick else "")
    if a.threads is None:
        # --quick: one thread. Measured on the shared, busy 2-core machine: two threads ran the smoke
        # run 5x slower (167 s vs 34 s wall, 118 s vs 23 s of CPU); its students are small
        a.threads = 1 if a.quick else 2
    return a


def teachers(a, root: Path) -> list[Path]:
    """Two teachers (different seeds), cached; the second only serves the committee and CV-DD."""
    if a.teacher:
        paths = [Path(t) for t in a.teacher]
        for t in paths:
            if not t.exists():
                sys.exit(f"storage_vs_accuracy: error: teacher checkpoint {t} does not exist; train it with `distill squeeze`")
    else:
        paths = []
        model = a.teacher_model
        for i in range(2 if (a.committee or "cvdd" in a.sources) else 1):
            ckpt = root / f"teacher{i}" / f"{model}.pt"
            if not ckpt.exists():
                squeeze(SqueezeConfig(out_dir=str(ckpt.parent), models=[model], epochs=a.teacher_epochs, batch_size=64,
                                      crop_scale=tuple(a.teacher_crop_scale) if a.teacher_crop_scale[0] < 1 else None,
                                      train_subset=a.teacher_subset or None, seed=i, threads=a.threads, device=a.device), progress=False)
            paths.append(ckpt)
    for i, ckpt in enumerate(paths):
        acc = torch.load(ckpt, map_location="cpu", weights_only=True)["test_acc"]
        print(f"teacher {i}: {ckpt} test top-1 {100 * acc:.2f}%", flush=True)
    return paths


def image_set(source: str, a, root: Path, tpaths: list[Path]) -> Path:
    path = root / "images" / source / "images.npz"
    if path.exists():
        return path
    if source == "real":
        ds = fashion_mnist("train").subset(100, seed=0)
        save_npz(path, ImageDataset(ds.images, ds.labels, 10, "real-10ipc"))
    else:
        recover(RecoverConfig(teachers=[str(t) for t in tpaths], out_dir=str(path.parent), ipc=10,
                              iterations=a.recover_iterations, method="sre2l" if source == "sre2l" else "cvdd",
                              threads=a.threads, device=a.device, beton=False), progress=False)
    return path


def relabel_mix(mix: str, source: str) -> str:
    """`auto`: no mixing on real images, CutMix on recovered ones. A recovered image's teacher
    output is nearly one-hot on any crop, so un-mixed labels carry little beyond the class
    (SRe2L S=20 all-soft 46.5 -> 65.3 % with CutMix); on real images CutMix cost 8.8 points."""
    if mix != "auto":
        return mix
    return "none" if source == "real" else "cutmix"


def base_labels(folder: Path, rc: RelabelConfig) -> tuple[Path, int]:
    """(file, epochs) to relabel into or reuse: a relabel output of `folder` made with `rc`'s settings
    and at least `rc.epochs` epochs (its first epochs are what a shorter relabel writes), else a new
    `S<epochs>-dense16.h5` (transcoded files carry no relabel config, so they are never taken)."""
    skip = ("out", "epochs", "threads", "device", "force")
    want = {k: v for k, v in config_dict(rc).items() if k not in skip}
    found = []
    for path in folder.glob("S*-dense16.h5"):
        try:
            rec = read_config(path)["config"]
        except (OSError, ValueError, KeyError):
            continue  # a transcoded file
        if {k: v for k, v in rec.items() if k not in skip} == want and rec["epochs"] >= rc.epochs:
            found.append((rec["epochs"], path))
    if found:
        epochs, path = min(found)
        return path, epochs
    path = folder / f"S{rc.epochs}-dense16.h5"
    if path.exists():  # a transcoded file (or one relabelled otherwise) under the name: relabel refuses it
        sys.exit(f"storage_vs_accuracy: error: {path} exists but is no relabel output of these settings; move it away")
    return path, rc.epochs


def transcode(src: Path, dst: Path, S: int, codec: str) -> Path:
    """The first S epochs of `src` under another codec (same seed, crops, orders, mixes, header)."""
    if dst.exists():
        return dst
    with LabelFile(src) as f:
        c = parse_codec_spec(codec, f.num_classes)
        if c.needs_fit:
            c.fit(np.concatenate([f.read_logits(e, b) for e in range(min(S, f.num_epochs)) for b in range(f.num_batches(e))]))
        with LabelWriter(dst, num_classes=f.num_classes, num_images=f.num_images, codec=c, seed=f.seed,
                         image_fingerprint=f.image_fingerprint, image_sizes=f.image_sizes, crop_policy=f.crop_policy,
                         mix_policy=f.mix_policy, teacher=f.teacher, attrs=f.user_attrs) as w:
            for e in range(S):
                w.begin_epoch(e, f.batch_size(e))
                for b in range(f.num_batches(e)):
                    w.write_batch(e, b, f.read_logits(e, b))
    return dst


def run_student(a, images: Path, labels: Path, schedule: str, seed: int, workdir: Path,
                recipe: str = DEFAULT_RECIPE) -> tuple[float, float]:
    """One student; a top-level function so `--workers` can run it in a separate process."""
    t = time.time()
    # --hard-mix is a setting of this project's recipe; a paper's recipe mixes as its script does
    hard_mix = getattr(a, "hard_mix", "cutmix") if recipe == DEFAULT_RECIPE else None
    with torch_threads(a.threads):
        res = train(TrainConfig(images=str(images), labels=str(labels), out_dir=str(workdir), model=a.model,
                                schedule=SCHEDULES[schedule], recipe=recipe, epochs=a.epochs, test_subset=a.test_subset,
                                seed=seed, hard_mix=hard_mix,
                                threads=a.threads, device=a.device, checkpoint_every=0), progress=False)
    return float(res["test_acc"]), time.time() - t


def main(argv=None) -> int:
    a = parse_args(argv)
    # scoped: distill's steps set torch's thread count and seed its global RNG; a caller's stay as they were
    with torch_threads(a.threads), torch_rng_kept():
        if a.quick and a.cache_dir is None:
            with tempfile.TemporaryDirectory(prefix="storage_vs_accuracy_quick_") as tmp:
                return _run(a, Path(tmp))
        return _run(a, Path(a.cache_dir or a.out))


def _run(a, cache: Path) -> int:
    root = Path(a.out)
    csv_path = root / "results.csv"
    done = {}
    # resume: rows already measured are kept; a --quick run is a smoke test and measures everything again
    if csv_path.exists() and (a.summarise_only or not a.quick):
        for r in csv.DictReader(open(csv_path)):
            r["recipe"] = r.get("recipe") or DEFAULT_RECIPE  # results written before recipes existed
            done[(r["source"], r["teacher"], r["codec"], int(r["S"]), r["schedule"], int(r["seed"]), r["recipe"])] = r
    if a.summarise_only:
        if not done:
            sys.exit(f"storage_vs_accuracy: error: {csv_path} has no measured runs to summarise")
        return 0 if summarise(list(done.values()), a, root) is not None else 1
    root.mkdir(parents=True, exist_ok=True)
    fields = ["source", "teacher", "codec", "S", "schedule", "seed", "label_bytes", "test_acc", "seconds", "mismatch",
              "recipe"]
    new = a.quick or not csv_path.exists()
    if not new and "recipe" not in open(csv_path).readline():  # an older results.csv: rewrite it with the column
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(done.values())
    out = open(csv_path, "w" if new else "a", newline="")
    writer = csv.DictWriter(out, fieldnames=fields)
    if new:
        writer.writeheader()
    t0 = time.time()
    tpaths = teachers(a, cache)
    Smax = max(a.S)
    jobs = []
    base_epochs: dict[Path, int] = {}  # each relabelled file and its stored epochs
    for source in a.sources:
        images = image_set(source, a, cache, tpaths)
        setups = [("single", [tpaths[0]])]
        if a.committee and source == "real":
            setups.append(("committee", tpaths))
        for tname, tlist in setups:
            rc = RelabelConfig(images=str(images), teachers=[str(t) for t in tlist], epochs=Smax, batch_size=a.batch_size,
                               codec="dense16", mix=relabel_mix(a.mix, source), threads=a.threads, device=a.device,
                               # the documented sweep's crops: relabel's own default for 28 px is now 0.5-1
                               crop_scale=(0.08, 1.0))
            base, epochs = base_labels(cache / "labels" / source / tname, rc)
            base_epochs[base] = epochs
            lab = relabel(replace(rc, out=str(base), epochs=epochs), progress=False)
            for codec in a.codecs:
                Ss = a.S if codec == "dense16" else [s for s in a.S if s in a.codec_S]
                for S in Ss:
                    for sched in a.schedules:
                        if codec != "dense16" and sched not in a.codec_schedules:
                            continue
                        if sched == "all-hard" and (S != min(a.S) or codec != a.codecs[0]):
                            continue  # hard labels ignore the stored ones: one run per seed
                        if tname == "committee" and (codec != "dense16" or sched not in ("all-soft", "HALD")):
                            continue
                        for seed in range(a.first_seed, a.first_seed + a.seeds):
                            for recipe in a.recipes:
                                if sched == "all-hard" and recipe != a.recipes[0]:
                                    continue
                                jobs.append((source, tname, codec, S, sched, seed, recipe, images, base,
                                             lab["mismatch"]))
    # seed-major: one seed of the whole grid first, so a run stopped early still covers every cell
    todo = sorted((j for j in jobs if j[:7] not in done), key=lambda j: j[5])
    print(f"{len(jobs)} student runs ({len(jobs) - len(todo)} already measured)", flush=True)
    runs = []  # transcode in this process (files are shared by runs), then train
    for source, tname, codec, S, sched, seed, recipe, images, base, mismatch in todo:
        slug = codec.replace(":", "_").replace("=", "")
        labels = (base if (S == base_epochs[base] and codec == "dense16")
                  else transcode(base, base.with_name(f"S{S}-{slug}.h5"), S, codec))
        runs.append(((source, tname, codec, S, sched, seed, recipe), images, labels, mismatch))
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    from tqdm import tqdm

    def record(key, labels, mismatch, acc, secs):
        source, tname, codec, S, sched, seed, recipe = key
        row = {"source": source, "teacher": tname, "codec": codec, "S": S, "schedule": sched, "seed": seed,
               "label_bytes": 0 if sched == "all-hard" else labels.stat().st_size, "test_acc": round(acc, 5),
               "seconds": round(secs, 1), "mismatch": round(mismatch, 4), "recipe": recipe}
        writer.writerow(row)
        out.flush()
        done[key] = {k: str(v) for k, v in row.items()}
        tqdm.write(f"{source:6} {tname:9} {codec:15} S={S:<4} {sched:12} {recipe:10} seed {seed}: {100 * acc:.2f}% "
                   f"({row['label_bytes']:,} B, {secs:.0f} s)")

    if a.workers <= 1:
        for key, images, labels, mismatch in tqdm(runs, desc="students"):
            record(key, labels, mismatch, *run_student(a, images, labels, key[4], key[5], cache / "work", key[6]))
    else:  # one work dir per run: concurrent students must not share last.pt / metrics
        with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(run_student, a, images, labels, key[4], key[5], cache / "work" / f"run{i}", key[6]):
                    (key, labels, mismatch)
                    for i, (key, images, labels, mismatch) in enumerate(runs)}
            from concurrent.futures import as_completed

            for f in tqdm(as_completed(futs), total=len(futs), desc="students"):
                key, labels, mismatch = futs[f]
                record(key, labels, mismatch, *f.result())
    out.close()
    summary = summarise(list(done.values()), a, root)
    print(f"total {time.time() - t0:.0f} s; {csv_path}, {root / 'summary.json'}, {root / 'storage_vs_accuracy.png'}")
    return 0 if summary is not None else 1


if __name__ == "__main__":
    sys.exit(main())
