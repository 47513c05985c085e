"""`distill demo`: what the toolkit is for, on Fashion-MNIST at 10 images per class, in minutes on 2 cores.

teacher (squeeze) -> images (10 real training images per class, or SRe2L-recovered ones) ->
labels: every stored epoch in dense fp16 (what SRe2L's layout would hold; that layout is
written by `labelstore.export` to measure its bytes), the same labels under a label budget, and
a file of few stored epochs -> students (all-soft on each; HALD and HALD-auto, and any other
schedule asked for, at few and at many stored epochs) -> one table and one PNG.

Every stage's output lives under `out_dir` with its resolved config beside it; a re-run
reuses each stage whose config is unchanged (`force=True` rebuilds everything). The demo is
the pipeline's driver: it runs the other stages through their public entry points (each
stage's config and function), never through their internals.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.config import config_dict, read_config
from distill.tables import write_csv

__all__ = ["DemoConfig", "demo", "schedule_slug", "schedule_name"]


@dataclass
class DemoConfig:
    """Settings of `distill demo`; the defaults finish in about 4 minutes on 2 CPU cores."""

    out_dir: str = "runs/demo"
    teacher_model: str = "convnet-w32"
    teacher_subset: int = 20000  # class-balanced training images for the teacher
    teacher_epochs: int = 2
    # RandomResizedCrop training for the teacher (None: shift+flip only): a teacher that knows
    # crops mislabels fewer of them, which is what gives HALD its effect on real images
    # (docs/benchmarks.md, storage vs accuracy)
    teacher_crop_scale: tuple[float, float] | None = (0.08, 1.0)
    images: str = "real"  # real: 10 random training images per class | sre2l: recovered by SRe2L
    ipc: int = 10
    recover_iterations: int = 100  # images="sre2l" only
    budget: str = "40KB"  # label budget (the planner picks stored epochs and codec)
    few: int = 1  # the "few stored epochs" file (HALD's case); "many" is one per student epoch
    # relabel's crop area range; relabel's own default for 28 px images is 0.5-1 (recover's rule)
    relabel_crop_scale: tuple[float, float] = (0.08, 1.0)
    # relabel mixing; None: none on real images, CutMix on recovered ones (measured best for each)
    mix: str | None = None
    # relabel batch = student batch (soft steps replay stored batches); 100 images in batches of
    # 100 is one optimizer step per epoch, which leaves students under-trained (docs/benchmarks.md)
    batch_size: int = 20
    student_model: str = "convnet-w32"
    student_epochs: int = 200
    # compared at few and at many stored epochs; all-soft also runs on the budgeted file
    schedules: list[str] = field(default_factory=lambda: ["soft", "hald", "hald:hard=auto"])
    temperature: float = 4.0
    test_subset: int | None = None  # test teacher and students on a class-balanced subset (quick runs)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 2
    force: bool = False


def schedule_slug(schedule: str) -> str:
    """A folder name for a schedule string: 'soft|drift' -> 'soft_drift'."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in schedule)


def _newer(inputs: tuple[Path, ...], output: Path) -> bool:
    """Make's rule: some input changed after `output` was written."""
    return not output.exists() or any(Path(i).stat().st_mtime > output.stat().st_mtime for i in inputs)


def _cached(output: Path, cfg: Any, force: bool, *inputs: Path) -> bool:
    """True when `output` exists, was made with exactly `cfg` (its config JSON says so) and
    is newer than every input it was made from."""
    if force or not output.exists() or _newer(inputs, output):
        return False
    try:
        return read_config(output)["config"] == config_dict(cfg)
    except (OSError, ValueError, KeyError):
        return False


def demo(cfg: DemoConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or reuse) every stage; print and return the results table."""
    from distill.data import fashion_mnist

    if cfg.images not in ("real", "sre2l"):
        from labelstore.errors import LabelStoreError

        raise LabelStoreError(f"demo images are 'real' or 'sre2l', got {cfg.images!r}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fashion_mnist("test")  # a missing data set fails here, with the apt line, before any work
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    times: dict[str, Any] = {}  # stage -> seconds, or "cached"; a rebuilt stage invalidates those after it
    teacher, teacher_acc = build_teacher(cfg, out, times, progress)
    images = build_images(cfg, out, teacher, times, progress)
    sets = build_labels(cfg, out, teacher, images, times, progress)
    runs: dict[tuple[str, str], dict[str, Any]] = {}  # (label set, resolved schedule) -> student
    rows = []
    for name, lab in sets.items():
        if name == "sre2l":  # the same logits as "full", in SRe2L's files: the same student
            continue
        # all-soft always runs: the label sets are compared on it, the other schedules against it
        scheds = ["soft"] if name == "budget" else ["soft"] + [s for s in cfg.schedules if s != "soft"]
        for sched in scheds:
            key = (name, _resolved(sched, lab["stored_epochs"]))
            if key not in runs:
                runs[key] = train_student(cfg, out, name, sched, images, lab, times, progress)
            rows.append({**runs[key], "labels": name, "schedule": sched})
    rows.insert(0, {**next(r for r in rows if r["labels"] == "full" and r["schedule"] == "soft"), "labels": "sre2l",
                    "label_bytes": sets["sre2l"]["bytes"], "codec": "fp16 torch.save", "files": sets["sre2l"]["files"]})
    total = time.time() - t_start
    _write(out, rows, teacher_acc, cfg)
    _print_table(cfg, out, rows, teacher_acc, sets, times, total)
    return {"rows": rows, "teacher_acc": teacher_acc, "labels": sets, "seconds": total, "times": times}


def _resolved(schedule: str, stored_epochs: int) -> str:
    """The schedule a file of `stored_epochs` epochs turns it into (hald:hard=auto at S=1 is hald)."""
    from loaders import parse_schedule

    return str(parse_schedule(schedule).for_labels(stored_epochs))


def _all_soft(schedule: str, cfg: DemoConfig) -> bool:
    """Whether `schedule` (not all-soft by name) has no hard epoch with every student epoch stored."""
    from loaders import parse_schedule

    s = parse_schedule(schedule).for_labels(cfg.student_epochs)
    return schedule != "soft" and set(s.kinds(cfg.student_epochs)) == {"soft"}


def _stage(title: str) -> None:
    print(f"\n== demo: {title}", flush=True)


def _rebuilt(times: dict[str, Any]) -> bool:
    """Whether a stage before this one was rebuilt (same paths, new contents: rebuild this one too)."""
    return any(v != "cached" for v in times.values())


def build_teacher(cfg: DemoConfig, out: Path, times: dict[str, Any], progress: bool) -> tuple[Path, float]:
    """1. The teacher (squeeze); returns its checkpoint and test accuracy."""
    from distill.squeeze import SqueezeConfig, squeeze

    sq = SqueezeConfig(out_dir=str(out / "teacher"), models=[cfg.teacher_model], epochs=cfg.teacher_epochs,
                       batch_size=128, crop_scale=cfg.teacher_crop_scale, train_subset=cfg.teacher_subset,
                       test_subset=cfg.test_subset, seed=cfg.seed, device=cfg.device, threads=cfg.threads)
    teacher = out / "teacher" / f"{cfg.teacher_model}.pt"
    _stage(f"teacher: {cfg.teacher_model}, {cfg.teacher_epochs} epochs on {cfg.teacher_subset} training images")
    if _cached(teacher, sq, cfg.force):
        times["teacher"] = "cached"
    else:
        t = time.time()
        squeeze(sq, progress=progress)
        times["teacher"] = time.time() - t
    teacher_acc = float(torch.load(teacher, map_location="cpu", weights_only=True)["test_acc"])
    print(f"teacher {teacher}: test top-1 {teacher_acc:.4f} ({_fmt_time(times['teacher'])})")
    return teacher, teacher_acc


def build_images(cfg: DemoConfig, out: Path, teacher: Path, times: dict[str, Any], progress: bool) -> Path:
    """2. The distilled images: `ipc` real training images per class, or SRe2L's recovered ones."""
    if cfg.images == "real":
        from distill.data import ImageDataset, fashion_mnist, save_npz

        images = out / "images" / "real.npz"
        _stage(f"images: {cfg.ipc} random real training images per class")
        if images.exists() and not cfg.force:
            times["images"] = "cached"
        else:
            t = time.time()
            ds = fashion_mnist("train").subset(10 * cfg.ipc, seed=cfg.seed)
            images.parent.mkdir(parents=True, exist_ok=True)
            save_npz(images, ImageDataset(ds.images, ds.labels, 10, f"real-{cfg.ipc}ipc"))
            times["images"] = time.time() - t
        return images
    from distill.recover import RecoverConfig, recover

    rc = RecoverConfig(teachers=[str(teacher)], out_dir=str(out / "recover"), ipc=cfg.ipc,
                       iterations=cfg.recover_iterations, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
                       beton=False)
    images = out / "recover" / "images.npz"
    _stage(f"recover (SRe2L): {cfg.ipc} images per class, {cfg.recover_iterations} iterations")
    if _cached(images, rc, cfg.force or _rebuilt(times), teacher):
        times["images"] = "cached"
    else:
        t = time.time()
        recover(rc, progress=progress)
        times["images"] = time.time() - t
    print(f"images {images} (preview {out / 'recover' / 'preview.png'}) ({_fmt_time(times['images'])})")
    return images


def build_labels(cfg: DemoConfig, out: Path, teacher: Path, images: Path, times: dict[str, Any],
                 progress: bool) -> dict[str, dict[str, Any]]:
    """3. The label sets, by name: `full` (every student epoch stored, dense fp16), `sre2l` (the
    same labels written in SRe2L's layout, to measure its bytes), `budget` (the planner's file
    under `budget`) and `few` (`few` stored epochs). relabel reuses a file made with the same settings."""
    from distill.relabel import RelabelConfig, relabel

    mix = cfg.mix or ("none" if cfg.images == "real" else "cutmix")
    force = cfg.force or _rebuilt(times)
    common = dict(images=str(images), teachers=[str(teacher)], batch_size=cfg.batch_size, seed=cfg.seed, mix=mix,
                  crop_scale=tuple(cfg.relabel_crop_scale), device=cfg.device, threads=cfg.threads)
    plans = {"full": dict(epochs=cfg.student_epochs), "budget": dict(epochs=cfg.student_epochs, budget=cfg.budget),
             "few": dict(epochs=cfg.few)}
    _stage(f"relabel: {cfg.student_epochs} stored epochs (dense fp16), under a {cfg.budget} budget, and {cfg.few}")
    t, sets = time.time(), {}
    reused = True
    for name, kw in plans.items():
        path = out / "labels" / f"{name}.h5"
        force_this = force or _newer((images, teacher), path)
        sets[name] = relabel(RelabelConfig(out=str(path), force=force_this, **common, **kw), progress=False)
        reused = reused and sets[name]["reused"]
    sets["sre2l"] = _sre2l_layout(sets["full"]["labels"], out / "labels" / "sre2l", force)
    times["relabel"] = "cached" if reused and sets["sre2l"]["reused"] else time.time() - t
    return sets


def _sre2l_layout(full: Path, folder: Path, force: bool) -> dict[str, Any]:
    """SRe2L's layout of `full` (a torch.save file per batch, `labelstore export --to sre2l`): its bytes."""
    from labelstore.export import export_sre2l

    stamp = folder / "done"
    reused = stamp.exists() and not force and stamp.stat().st_mtime >= Path(full).stat().st_mtime
    if not reused:
        export_sre2l(full, folder, progress=False, overwrite=True, log=lambda msg: None)
        stamp.write_text("written by distill demo\n")
    files = [p for p in folder.rglob("*.tar")]
    return {"labels": folder, "bytes": sum(p.stat().st_size for p in files), "files": len(files), "reused": reused,
            "stored_epochs": len({p.parent for p in files}), "codec": "fp16 torch.save"}


def train_student(cfg: DemoConfig, out: Path, set_name: str, sched: str, images: Path, lab: dict[str, Any],
                  times: dict[str, Any], progress: bool) -> dict[str, Any]:
    """4. One student on label set `set_name` with schedule `sched` (reused when built with these
    settings); returns its table row."""
    from distill.train import TrainConfig, resolve_recipe, train
    from loaders import parse_schedule

    tc = TrainConfig(images=str(images), labels=str(lab["labels"]),
                     out_dir=str(out / "students" / set_name / schedule_slug(sched)), model=cfg.student_model,
                     schedule=sched, epochs=cfg.student_epochs, temperature=cfg.temperature,
                     test_subset=cfg.test_subset, seed=cfg.seed, device=cfg.device, threads=cfg.threads)
    tc = resolve_recipe(tc)[0]  # what train records: every setting the recipe fills in
    ckpt = Path(tc.out_dir) / "student.pt"
    _stage(f"student: labels '{set_name}' ({lab['stored_epochs']} stored epochs), schedule '{sched}'")
    if _cached(ckpt, tc, cfg.force or _rebuilt(times), lab["labels"]) and read_config(ckpt).get("test_acc") is not None:
        rec = read_config(ckpt)
        acc, secs, cached = rec["test_acc"], rec["seconds"], True
    else:
        res = train(tc, progress=progress)
        acc, secs, cached = res["test_acc"], res["seconds"], False
    print(f"student '{sched}' on '{set_name}': test top-1 {acc:.4f} ({secs:.1f} s{', cached' if cached else ''})")
    uses_labels = parse_schedule(sched).for_labels(1).label_epochs(cfg.student_epochs) > 0  # all-hard reads none
    return {"schedule": sched, "test_acc": acc, "label_bytes": lab["bytes"] if uses_labels else 0,
            "stored_epochs": lab["stored_epochs"], "codec": lab["codec"], "train_seconds": round(secs, 1),
            "cached": cached}


NAMES = {"soft": "all-soft", "hald": "HALD", "hald:hard=auto": "HALD-auto", "hard": "all-hard"}


def schedule_name(schedule: str) -> str:
    """The name the papers use for a schedule string: 'hald' -> 'HALD', 'soft|correct' -> 'all-soft+correct'."""
    base, bar, mod = schedule.partition("|")
    return NAMES.get(base, base) + (f"+{mod}" if bar else "")


SET_TITLES = {"sre2l": "SRe2L layout (a torch.save file per batch)", "full": "labelstore, every epoch, dense fp16",
              "budget": "labelstore, under the budget", "few": "labelstore, few stored epochs"}


def _print_table(cfg: DemoConfig, out: Path, rows: list[dict], teacher_acc: float, sets: dict[str, Any],
                 times: dict[str, Any], total: float) -> None:
    what = "real training images" if cfg.images == "real" else "SRe2L-recovered images"
    print(f"\n== demo: Fashion-MNIST, {cfg.ipc} {what} per class, teacher {cfg.teacher_model} at "
          f"{100 * teacher_acc:.1f}%, students {cfg.student_model} x {cfg.student_epochs} epochs at batch "
          f"{cfg.batch_size}; {100 * sets['full']['mismatch']:.1f}% of the stored crops have teacher top-1 != class")
    scheds = list(dict.fromkeys(r["schedule"] for r in rows))
    print(f"{'labels':<44}{'epochs':>7}{'codec':>17}{'bytes':>12}" + "".join(f"{schedule_name(s):>16}" for s in scheds))
    for name in ("sre2l", "full", "budget", "few"):
        mine = {r["schedule"]: r for r in rows if r["labels"] == name}
        r0 = next(iter(mine.values()))
        title = SET_TITLES[name] + (f" {cfg.budget}" if name == "budget" else "")
        print(f"{title:<44}{r0['stored_epochs']:>7}{r0['codec']:>17}{r0['label_bytes']:>12,}"
              + "".join(f"{100 * mine[s]['test_acc']:>15.2f}%" if s in mine else f"{'':>16}" for s in scheds)
              + ("  (cached)" if all(r["cached"] for r in mine.values()) else ""))
    full, few = ({r["schedule"]: r["test_acc"] for r in rows if r["labels"] == n} for n in ("full", "few"))
    for s in (s for s in scheds if s != "soft"):
        print(f"{schedule_name(s)} - all-soft: {100 * (few[s] - few['soft']):+.2f} points with {cfg.few} stored "
              f"epoch(s), {100 * (full[s] - full['soft']):+.2f} with {cfg.student_epochs}"
              + (f" (at {cfg.student_epochs} stored epochs it has no hard epoch: all-soft)" if _all_soft(s, cfg) else ""))
    print(f"SRe2L's layout needs {sets['sre2l']['bytes'] / sets['budget']['bytes']:.0f}x the budgeted file's bytes "
          f"({sets['sre2l']['files']} files)")
    print("stage times: " + ", ".join(f"{k} {_fmt_time(v)}" for k, v in times.items())
          + f"; this run {total:.0f} s in all")
    print(f"results: {out / 'results.csv'}  plot: {out / 'results.png'}")


def _fmt_time(v) -> str:
    return v if isinstance(v, str) else f"{v:.0f} s"


def _write(out: Path, rows: list[dict], teacher_acc: float, cfg: DemoConfig) -> None:
    """results.csv and results.png: label bytes per label set, and the students' accuracy on each."""
    write_csv(out / "results.csv", rows)
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend switch

    names = ["sre2l", "full", "budget", "few"]
    scheds = list(dict.fromkeys(r["schedule"] for r in rows))
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    nbytes = [next(r["label_bytes"] for r in rows if r["labels"] == n) for n in names]
    bars = left.barh(range(len(names)), nbytes, color=["tab:gray", "tab:blue", "tab:green", "tab:olive"])
    for b, v in zip(bars, nbytes):
        left.text(v, b.get_y() + b.get_height() / 2, f" {v / 1000:,.1f} kB", va="center", fontsize=8)
    left.set(xscale="log", yticks=range(len(names)), xlabel="label bytes on disk",
             xlim=(min(nbytes) / 2, max(nbytes) * 8))
    left.set_yticklabels([SET_TITLES[n].replace(", ", ",\n") for n in names], fontsize=8)
    left.invert_yaxis()
    width = 0.8 / len(scheds)
    for i, s in enumerate(scheds):
        xs, ys = [], []
        for j, n in enumerate(names):
            r = next((r for r in rows if r["labels"] == n and r["schedule"] == s), None)
            if r is not None:
                xs.append(j + (i - (len(scheds) - 1) / 2) * width)
                ys.append(100 * r["test_acc"])
        bs = right.bar(xs, ys, width, label=schedule_name(s))
        for b, y in zip(bs, ys):
            right.text(b.get_x() + b.get_width() / 2, y + 0.4, f"{y:.1f}", ha="center", fontsize=7)
    right.axhline(100 * teacher_acc, color="k", ls="--", lw=1, label=f"teacher {100 * teacher_acc:.1f}%")
    right.set_xticks(range(len(names)))
    epochs = [next(r["stored_epochs"] for r in rows if r["labels"] == n) for n in names]
    right.set_xticklabels([f"{n}\n{e} stored epoch{'s' if e != 1 else ''}" for n, e in zip(names, epochs)], fontsize=8)
    lo = min(100 * r["test_acc"] for r in rows)
    right.set(ylabel="student test top-1 (%)", ylim=(max(0, lo - 10), 100))
    right.legend(fontsize=8, loc="upper right", ncol=2)
    what = "real" if cfg.images == "real" else "SRe2L-recovered"
    fig.suptitle(f"Fashion-MNIST, {cfg.ipc} {what} images per class: label bytes, and students trained on them",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
