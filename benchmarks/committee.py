"""CV-DD's committee, heterogeneous: does it beat the best single teacher? (docs/benchmarks.md)

1. Pool: every architecture of --pool (the ConvNet, ResNet-18, MobileNetV2, ShuffleNetV2,
   DenseNet-121, small-image variants) squeezed on one class-balanced subset of Fashion-MNIST's
   training split. Priors = each one's top-1 on --prior-images training images that none of
   them trained on (held out, so the test set never chooses a weight).
2. Images, 10 per class: SRe2L recovery by the best teacher (highest prior) against CV-DD
   recovery by a committee of --committee-size teachers per image index, drawn from the pool,
   weights softmax(prior / 5). Each set is scored by every pool teacher (cross-model
   recognisability).
3. Labels: each image set relabelled by the best teacher and by the whole pool as a weighted
   committee (softmax(prior / 10)), batch-specific BatchNorm, CutMix, max(--S) stored epochs;
   a shorter S is that file's first S epochs.
4. Students: all-soft, each --students architecture, --recipes, S, --seeds, full test set.

The 2 x 2 table (recovery by the best teacher or the committee x relabel by the best teacher or
the committee) per student, recipe and S goes to summary.md, with mean +- std over seeds and the
differences with their standard error. Everything is cached under --out; a re-run resumes.

    python -m benchmarks.committee --S 20 100         # the documented run: about 1 h 50 min on 2 CPU cores
    python -m benchmarks.committee                    # S = 20 and 300 from nothing: about 2 h 20 min
    python -m benchmarks.committee --quick            # smoke run: 2 small teachers, minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from distill.config import config_dict, read_config
from distill.data import fashion_mnist
from distill.metrics import accuracy
from distill.models import canonical_name, load_checkpoint
from distill.recover import RecoverConfig, recover
from distill.relabel import RelabelConfig, relabel
from distill.squeeze import SqueezeConfig, squeeze
from distill.train import TrainConfig, train
from labelstore import LabelStoreError

from ._recovered import check_cached, recognisability
from ._scope import torch_rng_kept, torch_threads
from .storage_vs_accuracy import base_labels, transcode

POOL = ["convnet", "resnet18", "mobilenetv2", "shufflenetv2", "densenet121"]
SOURCES = ("best", "committee")  # who recovered the images / who relabelled them
# the settings a cached teacher / image set must share with this run (else it is refused)
SQUEEZE_KEYS = ("data", "models", "epochs", "batch_size", "lr", "crop_scale", "train_subset", "seed")
RECOVER_KEYS = ("teachers", "method", "ipc", "iterations", "lr", "r_bn", "committee_size", "temperature", "priors",
                "seed")
FIELDS = ["recovery", "relabel", "student", "recipe", "S", "seed", "test_acc", "mismatch", "label_bytes", "seconds"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: two small teachers, few steps, one seed")
    p.add_argument("--out", default=None, help="results and cache folder (default results/committee)")
    p.add_argument("--pool", nargs="+", default=POOL, help="teacher architectures")
    p.add_argument("--teacher-subset", type=int, default=10000, help="training images per teacher (one subset)")
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--teacher-crop-scale", type=float, nargs=2, default=[0.08, 1.0])
    p.add_argument("--prior-images", type=int, default=2000, help="held-out training images that measure the priors")
    p.add_argument("--recover-iterations", type=int, default=300)
    p.add_argument("--committee-size", type=int, default=2, help="CV-DD teachers per image index in recovery")
    p.add_argument("--S", type=int, nargs="+", default=[20, 300], help="stored epochs")
    p.add_argument("--batch-size", type=int, default=20, help="relabel batch size, hence the students'")
    p.add_argument("--students", nargs="+", default=["convnet-w32", "lenet"], help="student architectures")
    p.add_argument("--recipes", nargs="+", default=["labelstore", "cvdd"], help="student recipes (distill.recipes)")
    p.add_argument("--epochs", type=int, default=300, help="student epochs")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--test-subset", type=int, default=None, help="test students on a class-balanced subset")
    p.add_argument("--workers", type=int, default=2, help="student runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 2 for the pipeline, 1 per student)")
    a = p.parse_args(argv)
    if a.quick:
        a.pool, a.teacher_subset, a.teacher_epochs, a.prior_images = ["convnet-w16", "convnet-w32"], 1000, 1, 500
        a.recover_iterations, a.S, a.students, a.recipes = 5, [1, 2], ["convnet-w16"], ["labelstore"]
        a.epochs, a.seeds, a.test_subset, a.workers = 4, 1, 500, 1
    try:  # one spelling per architecture: the cache folders and the report key by it
        a.pool, a.students = [canonical_name(m) for m in a.pool], [canonical_name(m) for m in a.students]
    except LabelStoreError as exc:
        p.error(str(exc))
    if len(a.pool) < 2:
        p.error("a committee needs at least two --pool architectures")
    return a


def check_run_settings(a, root: Path) -> None:
    """The student settings results.csv's rows were measured with (settings.json), refused if changed."""
    want = {"epochs": a.epochs, "test_subset": a.test_subset, "batch_size": a.batch_size,
            "prior_images": a.prior_images}
    path = root / "settings.json"
    if path.exists():
        had = json.loads(path.read_text())
        off = {k: (had.get(k), v) for k, v in want.items() if had.get(k) != v}
        if off:
            sys.exit(f"committee: error: {root} holds results measured with "
                     + ", ".join(f"{k}={old!r} (this run: {new!r})" for k, (old, new) in off.items())
                     + "; use another --out")
    else:
        path.write_text(json.dumps(want, indent=1))


def squeeze_pool(a, root: Path) -> list[Path]:
    """One checkpoint per pool architecture, all trained on the same training subset (cached)."""
    paths = []
    for model in a.pool:
        ckpt = root / "pool" / model / f"{model}.pt"
        cfg = SqueezeConfig(out_dir=str(ckpt.parent), models=[model], epochs=a.teacher_epochs, batch_size=64,
                            crop_scale=tuple(a.teacher_crop_scale), train_subset=a.teacher_subset,
                            test_subset=2000, seed=0, threads=a.threads or 2)
        if ckpt.exists():
            check_cached(ckpt, {k: v for k, v in config_dict(cfg).items() if k in SQUEEZE_KEYS}, "teacher", "committee")
        else:
            t = time.time()
            squeeze(cfg, progress=False)
            print(f"squeeze {model}: {time.time() - t:.0f} s", flush=True)
        paths.append(ckpt)
    return paths


def measure_priors(a, paths: list[Path]) -> list[float]:
    """Top-1 (%) of each teacher on training images that no pool teacher trained on (the draws
    are the ones each checkpoint's squeeze recorded)."""
    full = fashion_mnist("train")
    trained = np.unique(np.concatenate([full.subset_indices(c["train_subset"], seed=c["seed"])
                                        for c in (read_config(p)["config"] for p in paths)]))
    rest = np.setdiff1d(np.arange(len(full)), trained)
    held = full.subset(indices=rest)
    held = held.subset(indices=held.subset_indices(a.prior_images, seed=1))
    priors = []
    for path in paths:
        model, meta = load_checkpoint(path)
        priors.append(100 * accuracy(model.eval(), held, meta["mean"], meta["std"], int(meta["image_size"]),
                                     progress=False))
    return priors


def recovered(a, root: Path, source: str, paths: list[Path], priors: list[float], best: int) -> Path:
    """images.npz recovered by the best teacher (SRe2L) or by committees drawn from the pool (CV-DD)."""
    path = root / "images" / source / "images.npz"
    if source == "best":
        cfg = RecoverConfig(teachers=[str(paths[best])], method="sre2l")
    else:
        cfg = RecoverConfig(teachers=[str(p) for p in paths], method="cvdd", priors=priors,
                            committee_size=a.committee_size, temperature=5.0)
    cfg = replace(cfg, out_dir=str(path.parent), ipc=10, iterations=a.recover_iterations, threads=a.threads or 2,
                  beton=False)
    if path.exists():
        check_cached(path, {k: v for k, v in config_dict(cfg).items() if k in RECOVER_KEYS}, "image set", "committee")
    else:
        t = time.time()
        recover(cfg, progress=False)
        print(f"recover {source}: {time.time() - t:.0f} s", flush=True)
    return path


def labelled(a, root: Path, images: Path, recovery: str, rel: str, paths: list[Path], priors: list[float],
             best: int) -> tuple[Path, dict]:
    """The max(S)-epoch dense16 file of `images` relabelled by the best teacher or the committee."""
    teachers, tp = ([paths[best]], [priors[best]]) if rel == "best" else (paths, priors)
    rc = RelabelConfig(images=str(images), teachers=[str(p) for p in teachers], priors=tp, temperature=10.0,
                       epochs=max(a.S), batch_size=a.batch_size, codec="dense16", bn="batch", mix="cutmix",
                       crop_scale=(0.08, 1.0), threads=a.threads or 2)
    base, epochs = base_labels(root / "labels" / recovery / rel, rc)
    t = time.time()
    res = relabel(replace(rc, out=str(base), epochs=epochs), progress=False)
    if not res["reused"]:
        print(f"relabel {recovery} images by {rel}: {time.time() - t:.0f} s, top-1 != class "
              f"{100 * res['mismatch']:.1f}%", flush=True)
    return base, res


def run_student(job: dict) -> tuple[float, float]:
    """One all-soft student; top-level so a worker process can run it."""
    t = time.time()
    with torch_threads(job["threads"]), torch_rng_kept():
        res = train(TrainConfig(images=job["images"], labels=job["labels"], out_dir=job["work"], model=job["student"],
                                schedule="soft", recipe=job["recipe"], epochs=job["epochs"],
                                test_subset=job["test_subset"], seed=job["seed"], threads=job["threads"],
                                checkpoint_every=0), progress=False)
    return float(res["test_acc"]), time.time() - t


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None below two values)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def diff(xs: list[float], ys: list[float]) -> tuple[float, float | None]:
    """mean(xs) - mean(ys) and the standard error of that difference (None below two values each)."""
    (mx, sx), (my, sy) = mean_std(xs), mean_std(ys)
    se = None if sx is None or sy is None else math.sqrt(sx ** 2 / len(xs) + sy ** 2 / len(ys))
    return mx - my, se


def pm(value: float, spread: float | None, signed: bool = False) -> str:
    value = 0.0 if abs(value) < 0.005 else value  # no "-0.00"
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return f"{text} ± {spread:.1f}" if spread is not None else f"{text} (n/a)"


def table_2x2(cell: dict[tuple[str, str], list[float]]) -> list[str]:
    """Markdown rows of the 2 x 2: cells mean ± std over seeds, differences ± their standard error."""
    lines = ["| recovery \\ relabel | best teacher | committee | committee − best |", "|---|---:|---:|---:|"]
    for rv in SOURCES:
        d, se = diff(cell[rv, "committee"], cell[rv, "best"])
        lines.append(f"| {rv} | {pm(*mean_std(cell[rv, 'best']))} | {pm(*mean_std(cell[rv, 'committee']))} "
                     f"| {pm(d, se, True)} |")
    both = diff(cell["committee", "committee"], cell["best", "best"])
    lines.append("| committee − best | " + " | ".join(pm(*diff(cell["committee", rl], cell["best", rl]), True)
                                                      for rl in SOURCES) + f" | both: {pm(*both, True)} |")
    return lines


def report(rows: list[dict], a, info: dict, root: Path) -> str:
    """Markdown: the pool, recognisability, and one 2 x 2 table per student, recipe and S."""
    lines = ["Pool (prior: top-1 % on held-out training images; test: top-1 % on 2,000 test images):", "",
             "| teacher | prior | test |", "|---|---:|---:|"]
    for name, p, t in zip(info["pool"], info["priors"], info["test"]):
        lines.append(f"| {name}{' (best)' if name == info['best'] else ''} | {p:.2f} | {t:.2f} |")
    lines += ["", "Recognisability: top-1 % of each pool teacher on the recovered images it took no part in "
              "recovering, on how many images (and on all of them):", "",
              "| recovery | " + " | ".join(info["pool"]) + " |", "|---" + "|---:" * len(info["pool"]) + "|"]
    for src in SOURCES:
        rec = info["recognisability"][src]
        lines.append(f"| {src} | " + " | ".join(
            (f"{r['honest']:.0f} on {r['not_recovered']} ({r['all']:.0f} on all)" if r["honest"] is not None
             else f"recovered them ({r['all']:.0f})") for r in (rec[m] for m in info["pool"])) + " |")
    acc: dict[tuple, list[float]] = {}
    for r in rows:
        if int(r["seed"]) < a.seeds:  # rows of an earlier run with more seeds stay out of this table
            acc.setdefault((r["student"], r["recipe"], int(r["S"]), r["recovery"], r["relabel"]), []).append(
                100 * float(r["test_acc"]))
    info["tables"] = {}
    for student in a.students:
        for recipe in a.recipes:
            for S in a.S:
                cell = {(rv, rl): acc.get((student, recipe, S, rv, rl), []) for rv in SOURCES for rl in SOURCES}
                if not all(cell.values()):
                    continue
                n = min(len(v) for v in cell.values())
                lines += ["", f"Student `{student}`, recipe `{recipe}`, S = {S}: test top-1 %, {n} seeds; cells "
                          "mean ± std over seeds, differences ± their standard error:", ""] + table_2x2(cell)
                info["tables"][f"{student}/{recipe}/S{S}"] = {f"{rv}/{rl}": v for (rv, rl), v in cell.items()}
    text = "\n".join(lines) + "\n"
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps(info, indent=1))
    if info["tables"]:
        plot(info["tables"], root / "committee.png")
    return text


def plot(tables: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """One panel per student and recipe: the four cells' mean ± std over seeds at each S."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({k.rsplit("/", 1)[0] for k in tables})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    cells = [f"{rv}/{rl}" for rv in SOURCES for rl in SOURCES]
    for ax, panel in zip(axes[0], panels):
        Ss = sorted(int(k.rsplit("/S", 1)[1]) for k in tables if k.rsplit("/", 1)[0] == panel)
        for i, c in enumerate(cells):
            vals = [tables[f"{panel}/S{S}"][c] for S in Ss]
            ax.bar([j + 0.2 * (i - 1.5) for j in range(len(Ss))], [statistics.fmean(v) for v in vals], 0.2,
                   yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in vals], capsize=2,
                   label=f"images by {c.split('/')[0]}, labels by {c.split('/')[1]}")
        ax.set_xticks(range(len(Ss)), [f"S={S}" for S in Ss])
        lo = min(min(v) for S in Ss for v in tables[f"{panel}/S{S}"].values())
        ax.set_ylim(lo - 3, None)
        ax.set(title=panel.replace("/", ", recipe "), ylabel="student test top-1 %")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("committee vs best teacher, in recovery and relabelling (mean ± std over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    a = parse_args(argv)
    with torch_threads(a.threads or 2), torch_rng_kept():
        if a.quick and a.out is None:
            with tempfile.TemporaryDirectory(prefix="committee_quick_") as tmp:
                return _run(a, Path(tmp))
        return _run(a, Path(a.out or "results/committee"))


def _run(a, root: Path) -> int:
    t0 = time.time()
    root.mkdir(parents=True, exist_ok=True)
    check_run_settings(a, root)
    paths = squeeze_pool(a, root)
    priors = measure_priors(a, paths)
    best = int(np.argmax(priors))
    tests = [100 * torch.load(p, map_location="cpu", weights_only=True)["test_acc"] for p in paths]
    for m, p, t in zip(a.pool, priors, tests):
        print(f"teacher {m}: prior {p:.2f}% (held-out training images), test {t:.2f}%", flush=True)
    info = {"pool": a.pool, "priors": priors, "test": tests, "best": a.pool[best], "recognisability": {},
            "mismatch": {}}
    jobs = plan_students(a, root, paths, priors, best, info)
    rows = train_students(a, root, jobs)
    print(report(rows, a, info, root))
    print(f"total {time.time() - t0:.0f} s; {root / 'results.csv'}, {root / 'summary.md'}", flush=True)
    return 0


def plan_students(a, root: Path, paths: list[Path], priors: list[float], best: int, info: dict) -> list[dict]:
    """Recover both image sets and relabel each both ways (cached); one job per student run."""
    jobs = []
    for rv in SOURCES:
        images = recovered(a, root, rv, paths, priors, best)
        info["recognisability"][rv] = recognisability(images, [str(p) for p in paths])
        for rl in SOURCES:
            base, res = labelled(a, root, images, rv, rl, paths, priors, best)
            info["mismatch"][f"{rv}/{rl}"] = res["mismatch"]
            for S in a.S:
                labels = base if S == max(a.S) else transcode(base, base.with_name(f"S{S}-dense16.h5"), S, "dense16")
                for student in a.students:
                    for recipe in a.recipes:
                        for seed in range(a.seeds):
                            jobs.append({"recovery": rv, "relabel": rl, "student": student, "recipe": recipe, "S": S,
                                         "seed": seed, "images": str(images), "labels": str(labels),
                                         "mismatch": res["mismatch"]})
    return jobs


def _key(row: dict) -> tuple[str, ...]:
    return tuple(str(row[k]) for k in FIELDS[:6])


def train_students(a, root: Path, jobs: list[dict]) -> list[dict]:
    """Train the jobs results.csv lacks (seed-major, so a stopped run still covers every cell);
    returns every measured row."""
    csv_path = root / "results.csv"
    done = {}
    if csv_path.exists():
        with open(csv_path) as f:
            done = {_key(r): r for r in csv.DictReader(f)}
    todo = sorted((j for j in jobs if _key(j) not in done), key=lambda j: j["seed"])
    print(f"{len(jobs)} students ({len(jobs) - len(todo)} already measured)", flush=True)
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        for i, j in enumerate(todo):  # one work folder per run: concurrent students share no last.pt
            j.update(work=str(root / "work" / f"run{i}"), threads=1 if a.workers > 1 else (a.threads or 2),
                     epochs=a.epochs, test_subset=a.test_subset)

        def record(j, acc, secs):
            row = {k: j[k] for k in FIELDS[:6]} | {"test_acc": round(acc, 5), "mismatch": round(j["mismatch"], 4),
                                                   "label_bytes": Path(j["labels"]).stat().st_size,
                                                   "seconds": round(secs, 1)}
            writer.writerow(row)
            out.flush()
            done[_key(row)] = row
            print(f"{j['recovery']:9} images, {j['relabel']:9} labels, {j['student']:12} {j['recipe']:10} "
                  f"S={j['S']:<4} seed {j['seed']}: {100 * acc:.2f}% ({secs:.0f} s)", flush=True)

        if a.workers <= 1:
            for j in todo:
                record(j, *run_student(j))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
                futs = {pool.submit(run_student, j): j for j in todo}
                for f in as_completed(futs):
                    record(futs[f], *f.result())
    return list(done.values())


if __name__ == "__main__":
    sys.exit(main())
