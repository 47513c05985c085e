"""Loader throughput: this project's replay loaders against FFCV's own loader and SRe2L's way.

Same images, same cores (``--workers``), same batch size, side by side in one run; each
configuration is timed one epoch at a time in round-robin over ``--reps`` rounds (the median
epoch counts), after an untimed warm-up epoch that compiles FFCV's pipelines:

- ``ffcv_rrc``      FFCV's RandomResizedCropRGBImageDecoder, no flip, no labels (the upper bound), uint8
- ``ffcv_rrc_flip`` the same + FFCV's RandomHorizontalFlip op (FFCV's ImageNet training pipeline), uint8
- ``replay_backend`` FFCVBackend on the stored crops + LabelFile.read_batch per batch, uint8 + logits
- ``replay_pool``   the same with LPLD's label pool: batches drawn from all stored epochs with replacement
- ``replay_loader`` ReplayLoader (soft steps: stored CutMix, normalised float32, probabilities) on FFCVBackend
- ``sre2l`` / ``sre2l_uint8``  torchvision ImageFolder + PIL, crops replayed from stored normalised coords
                    (SRe2L's RandomResizedCropWithCoords) + ``torch.load`` of ``epoch_<e>/batch_<b>.tar``
                    per batch in DataLoader workers, CutMix from the file, normalised float32 (or uint8)
- ``torch_twin``    ReplayLoader on TorchBackend (the pure-PyTorch twin), normalised float32

Run: ``python -m benchmarks.loader_throughput [--quick]``; results under results/loader_throughput/.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import _images
from labelstore import CropPolicy, LabelFile, LabelWriter, MixPolicy

OUT = Path("results") / "loader_throughput"


# -- label files ----------------------------------------------------------------------------
class TimedLabelFile(LabelFile):
    """A LabelFile that adds up the seconds spent reading and decoding batches."""

    seconds = 0.0
    batches = 0

    def read_batch(self, epoch, batch):
        t = time.perf_counter()
        out = super().read_batch(epoch, batch)
        self.seconds += time.perf_counter() - t
        self.batches += 1
        return out


def teacher_like_logits(rng, n, num_classes):
    z = rng.normal(0, 2.0, size=(n, num_classes)).astype(np.float32)
    z[np.arange(n), rng.integers(0, num_classes, n)] += 8.0
    return z


def write_labels(path, sizes, fingerprint, *, epochs, batch_size, num_classes, codec, seed=0):
    """A label file with derived crops, orders and CutMix (as record mode writes them)."""
    rng = np.random.default_rng(seed)
    n = len(sizes)
    with LabelWriter(path, num_classes=num_classes, num_images=n, codec=codec, seed=seed, image_fingerprint=fingerprint,
                     image_sizes=sizes, crop_policy=CropPolicy(size=(224, 224)), mix_policy=MixPolicy("cutmix")) as w:
        for e in range(epochs):
            w.begin_epoch(e, batch_size)
            for b in range(w.num_batches(e)):
                w.write_batch(e, b, teacher_like_logits(rng, len(w.batch_indices(e, b)), num_classes))
    return path


def write_sre2l_files(root, lf: LabelFile, sizes):
    """SRe2L's relabel output for the same crops: epoch_<e>/batch_<b>.tar = [coords, flip, mix_index, mix_lam, mix_bbox, logits fp16]."""
    for e in range(lf.num_epochs):
        d = Path(root) / f"epoch_{e}"
        d.mkdir(parents=True, exist_ok=True)
        for b in range(lf.num_batches(e)):
            batch = lf.read_batch(e, b)
            hw = sizes[batch.indices].astype(np.float32)
            bx = batch.boxes.astype(np.float32)
            coords = np.stack([bx[:, 0] / hw[:, 0], bx[:, 1] / hw[:, 1], bx[:, 2] / hw[:, 0], bx[:, 3] / hw[:, 1]], 1)
            mix = batch.mix
            torch.save([torch.from_numpy(coords), torch.from_numpy(batch.flips), torch.from_numpy(mix.partner),
                        float(mix.lam), [int(v) for v in mix.box], torch.from_numpy(batch.logits).half()],
                       d / f"batch_{b}.tar")
    return Path(root)


# -- the SRe2L baseline -----------------------------------------------------------------------
class SRe2LBatches(torch.utils.data.Dataset):
    """One item = one stored batch, fetched in a worker as SRe2L's patched fetcher does."""

    def __init__(self, folder, label_root, orders, batch_size, normalize=True):
        from torchvision.datasets import ImageFolder

        self.folder = ImageFolder(str(folder))
        pos = {int(Path(p).stem): i for i, (p, _) in enumerate(self.folder.samples)}
        self.position = np.array([pos[i] for i in range(len(pos))])  # our image id -> ImageFolder index
        self.label_root, self.orders, self.batch_size = Path(label_root), orders, batch_size
        self.normalize = normalize

    def __len__(self):
        return sum(len(o) for o in self.orders)

    def __getitem__(self, key):
        from torchvision.transforms import functional as F

        e, b = key
        coords, flip, mix_index, mix_lam, mix_bbox, logits = torch.load(self.label_root / f"epoch_{e}" / f"batch_{b}.tar")
        ids = self.orders[e][b * self.batch_size : (b + 1) * self.batch_size]
        images = []
        for k, i in enumerate(ids):
            img, _ = self.folder[int(self.position[i])]  # PIL decode
            W, H = img.size
            c = coords[k]
            top, left = int(round(float(c[0]) * H)), int(round(float(c[1]) * W))
            h, w = int(round(float(c[2]) * H)), int(round(float(c[3]) * W))
            img = F.resized_crop(img, top, left, h, w, [224, 224], interpolation=F.InterpolationMode.BILINEAR)
            if flip[k]:
                img = F.hflip(img)
            if self.normalize:  # SRe2L: ToTensor + Normalize in the worker
                images.append(F.normalize(F.to_tensor(img), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
            else:  # uint8, to compare with loaders that hand uint8 to the GPU
                images.append(F.pil_to_tensor(img))
        return torch.stack(images), logits, mix_index, mix_bbox


class _Keys(torch.utils.data.Sampler):
    """The epoch's (epoch, batch) keys, replaced before each pass (workers persist across epochs)."""

    keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


def sre2l_runner(folder, label_root, lf: LabelFile, batch_size, workers, normalize=True):
    orders = [lf.order(e) for e in range(lf.num_epochs)]
    ds = SRe2LBatches(folder, label_root, orders, batch_size, normalize)
    keys = _Keys()
    dl = torch.utils.data.DataLoader(ds, batch_size=None, sampler=keys, num_workers=workers, prefetch_factor=2,
                                     persistent_workers=True)

    def run(epoch):
        keys.keys = [(epoch, b) for b in range(lf.num_batches(epoch))]
        n = 0
        for images, logits, mix_index, (y0, x0, y1, x1) in dl:  # CutMix in the training loop, as SRe2L
            images[:, :, y0:y1, x0:x1] = images[mix_index, :, y0:y1, x0:x1]
            probs = torch.softmax(logits.float() / 4.0, -1)
            n += len(images) + 0 * int(probs.shape[0])
        return n

    return run


# -- FFCV and this project's loaders --------------------------------------------------------
def ffcv_rrc_runner(beton, batch_size, workers, flip=False):
    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, ToTensor, ToTorchImage

    loader = Loader(str(beton), batch_size=batch_size, num_workers=workers, order=OrderOption.RANDOM, drop_last=False,
                    seed=0, pipelines={"image": [RandomResizedCropRGBImageDecoder((224, 224))]
                                       + ([RandomHorizontalFlip()] if flip else []) + [ToTensor(), ToTorchImage()],
                                       "label": None})

    def run(epoch):
        return sum(len(x) for (x,) in loader)

    return run


def replay_backend_runner(backend, lf: TimedLabelFile):
    from loaders.backend import CropBatch

    def run(epoch):
        batches = [lf.read_batch(epoch, b) for b in range(lf.num_batches(epoch))]
        crops = [CropBatch(bt.indices, bt.boxes, bt.flips) for bt in batches]
        return sum(len(x) for x in backend.iter_batches(crops, (224, 224)))

    return run


def replay_pool_runner(backend, lf: TimedLabelFile):
    """LPLD's label pool: each batch is a stored batch of any stored epoch, drawn with replacement."""
    from loaders.backend import CropBatch

    def run(epoch):
        g = np.random.default_rng(epoch)
        nb = lf.num_batches(0)
        picks = [(int(g.integers(lf.num_epochs)), int(g.integers(nb))) for _ in range(nb)]
        batches = [lf.read_batch(e, b) for e, b in picks]
        crops = [CropBatch(bt.indices, bt.boxes, bt.flips) for bt in batches]
        return sum(len(x) for x in backend.iter_batches(crops, (224, 224)))

    return run


def replay_loader_runner(backend, lf: TimedLabelFile):
    from loaders import ReplayLoader

    loader = ReplayLoader(lf, backend, "soft", epochs=lf.num_epochs)

    def run(epoch):
        loader.set_epoch(epoch)
        return sum(len(step) for step in loader)

    return run


# -- the run ----------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small smoke run (200 + 100 images, 1 timed epoch; ~1 minute)")
    ap.add_argument("--images", type=int, default=2000, help="fixed-size 224 px images")
    ap.add_argument("--variable-images", type=int, default=1000, help="variable-size images (FKD case)")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per configuration (median counts)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--codec", default="topk:k=10")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        # most of a quick run is FFCV compiling its pipelines in the warm-up epoch; fewer images trim the rest
        args.images, args.variable_images, args.reps = 200, 100, 1
    # images, betons and label files of this run only; removed afterwards (they were left in /tmp)
    with tempfile.TemporaryDirectory(prefix="loader_throughput_") as tmp:
        return _run(args, Path(tmp))


def _run(args, tmp: Path) -> dict:
    from tqdm import tqdm

    from loaders import FFCVBackend, TorchBackend
    from loaders.beton import write_beton

    E = args.reps + 1  # epoch 0 warms up (compiles)
    bs, W = args.batch_size, args.workers
    t0 = time.perf_counter()
    print(f"making {args.images} fixed 224 px and {args.variable_images} variable-size images from skimage photos ...")
    fixed = _images.fixed_images(args.images, 224)
    variable = _images.variable_images(args.variable_images)
    y = _images.class_labels(args.images, args.classes)
    info = {}
    for name, imgs, mode in (("fixed_raw", fixed, "raw"), ("fixed_jpg", fixed, "jpg"), ("variable_raw", variable, "raw")):
        info[name] = write_beton(imgs, tmp / f"{name}.beton", labels=_images.class_labels(len(imgs), args.classes),
                                 write_mode=mode, num_workers=W, progress=False)
    folder = _images.write_image_folder(fixed, y, tmp / "folder", ".jpg", quality=90)
    labels = {}
    for name, imgs in (("fixed", fixed), ("variable", variable)):
        src = info[f"{name}_raw"]
        labels[name] = write_labels(tmp / f"{name}.h5", src.image_sizes, src.fingerprint, epochs=E, batch_size=bs,
                                    num_classes=args.classes, codec=args.codec)
    sre2l_root = write_sre2l_files(tmp / "sre2l_labels", LabelFile(labels["fixed"]), info["fixed_raw"].image_sizes)
    print(f"data ready in {time.perf_counter() - t0:.0f} s (in {tmp})")

    lfs = {}
    configs = {}

    def lf(key, set_name):
        lfs[key] = TimedLabelFile(labels[set_name])
        return lfs[key]

    for set_name, beton in (("fixed_raw", "fixed_raw"), ("fixed_jpg", "fixed_jpg"), ("variable_raw", "variable_raw")):
        path = tmp / f"{beton}.beton"
        lset = set_name.split("_")[0]
        configs[f"ffcv_rrc/{set_name}"] = ffcv_rrc_runner(path, bs, W)
        if set_name.startswith("fixed") and not args.quick:
            configs[f"ffcv_rrc_flip/{set_name}"] = ffcv_rrc_runner(path, bs, W, flip=True)
        backend = FFCVBackend(path, num_workers=W)
        configs[f"replay_backend/{set_name}"] = replay_backend_runner(backend, lf(f"replay_backend/{set_name}", lset))
        configs[f"replay_loader/{set_name}"] = replay_loader_runner(backend, lf(f"replay_loader/{set_name}", lset))
        if set_name == "fixed_raw":
            configs[f"replay_pool/{set_name}"] = replay_pool_runner(backend, lf(f"replay_pool/{set_name}", lset))
    configs["sre2l/fixed_jpg"] = sre2l_runner(folder, sre2l_root, LabelFile(labels["fixed"]), bs, W)
    configs["sre2l_uint8/fixed_jpg"] = sre2l_runner(folder, sre2l_root, LabelFile(labels["fixed"]), bs, W, normalize=False)
    configs["torch_twin/fixed_raw"] = replay_loader_runner(TorchBackend(fixed, num_workers=W), lf("torch_twin/fixed_raw", "fixed"))
    if not args.quick:
        configs["torch_twin/variable_raw"] = replay_loader_runner(TorchBackend(variable, num_workers=W),
                                                                  lf("torch_twin/variable_raw", "variable"))

    times: dict[str, list[float]] = {k: [] for k in configs}
    counts: dict[str, int] = {}
    label_s: dict[str, list[float]] = {k: [] for k in configs}
    for epoch in tqdm(range(E), desc="epochs (round-robin over configurations)"):
        for key, run in configs.items():
            if key in lfs:
                lfs[key].seconds = 0.0
            t = time.perf_counter()
            counts[key] = run(epoch)
            dt = time.perf_counter() - t
            if epoch > 0:  # epoch 0 compiles and warms caches
                times[key].append(dt)
                if key in lfs:
                    label_s[key].append(lfs[key].seconds)

    rows = []
    for key in configs:
        loader, data = key.split("/")
        med = statistics.median(times[key])
        lab = statistics.median(label_s[key]) if label_s[key] else None
        rows.append(dict(loader=loader, data=data, images=counts[key], seconds=round(med, 4),
                         images_per_s=round(counts[key] / med, 1),
                         label_share=round(lab / med, 4) if lab is not None else None))
    by = {(r["loader"], r["data"]): r["images_per_s"] for r in rows}
    for r in rows:
        up = by.get(("ffcv_rrc", r["data"]))
        r["vs_ffcv_rrc"] = round(r["images_per_s"] / up, 3) if up else None
        uint8 = r["loader"] in ("ffcv_rrc", "ffcv_rrc_flip", "replay_backend", "replay_pool", "sre2l_uint8")  # same output kind, same baseline
        r["vs_sre2l"] = round(r["images_per_s"] / by[("sre2l_uint8" if uint8 else "sre2l", "fixed_jpg")], 2)

    print(f"\n{args.images} fixed / {args.variable_images} variable images, batch {bs}, {W} workers, "
          f"median of {args.reps} epochs, {platform.processor() or platform.machine()}")
    head = f"{'loader':16s} {'data':13s} {'images/s':>9s} {'vs ffcv_rrc':>11s} {'vs sre2l':>9s} {'label share':>11s}"
    print(head + "\n" + "-" * len(head))
    print("(vs sre2l: uint8 loaders against sre2l_uint8, float loaders against sre2l)")
    for r in rows:
        vr = f"{r['vs_ffcv_rrc']:.2f}" if r["vs_ffcv_rrc"] is not None else "-"
        ls = f"{100 * r['label_share']:.1f}%" if r["label_share"] is not None else "-"
        print(f"{r['loader']:16s} {r['data']:13s} {r['images_per_s']:9.0f} {vr:>11s} {r['vs_sre2l']:9.2f} {ls:>11s}")
    targets = {
        "replay/ffcv_rrc >= 0.8 (replay_backend, fixed_raw)": by[("replay_backend", "fixed_raw")] / by[("ffcv_rrc", "fixed_raw")],
        "replay/sre2l >= 5 (replay_backend vs sre2l_uint8, fixed_jpg)":
            by[("replay_backend", "fixed_jpg")] / by[("sre2l_uint8", "fixed_jpg")],
        "replay/sre2l >= 5 (replay_backend fixed_raw vs sre2l_uint8 fixed_jpg)":
            by[("replay_backend", "fixed_raw")] / by[("sre2l_uint8", "fixed_jpg")],
        "replay/sre2l >= 5 (replay_loader vs sre2l, float on CPU, fixed_jpg)":
            by[("replay_loader", "fixed_jpg")] / by[("sre2l", "fixed_jpg")],
        "label lookup+decode <= 5% (replay_backend, fixed_raw)": next(
            r["label_share"] for r in rows if (r["loader"], r["data"]) == ("replay_backend", "fixed_raw")),
    }
    print()
    for name, v in targets.items():
        ok = v >= (0.8 if "0.8" in name else 5) if ">=" in name else v <= 0.05
        print(f"target {name}: {v:.3f} {'met' if ok else 'MISSED'}")

    args.out.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    with open(args.out / f"loader_throughput_{tag}.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    result = dict(args={k: str(v) for k, v in vars(args).items()}, rows=rows, targets=targets,
                  load_average=os.getloadavg(), cpu_count=os.cpu_count())
    (args.out / f"loader_throughput_{tag}.json").write_text(json.dumps(result, indent=1))
    try:
        _plot(rows, args.out / f"loader_throughput_{tag}.png")
    except Exception as exc:  # a plot is a convenience
        print(f"(no plot: {exc})")
    print(f"wrote {args.out}/loader_throughput_{tag}.{{csv,json,png}}")
    return result


def _plot(rows, path):
    from matplotlib.figure import Figure  # no pyplot: no process-wide backend switch, no figure kept open

    fig = Figure(figsize=(8, 0.4 * len(rows) + 1))
    ax = fig.subplots()
    labels = [f"{r['loader']} / {r['data']}" for r in rows]
    ax.barh(labels, [r["images_per_s"] for r in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("images / s")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
