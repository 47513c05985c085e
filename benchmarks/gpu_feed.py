"""GPU feed: the device-resident backend against TorchBackend (and FFCVBackend), side by side, on whatever device
this machine has. One prepared command; JSON under --out and a table on stdout.

- (a) ``pixels`` / ``replay``: images/s of crop batches ready on the device (uint8), and of ReplayLoader soft steps
  (stored CutMix, labels decoded, bf16 channels-last input on CUDA) with ``topk:k=10`` and ``lowrank`` labels of
  ImageNet-1K shape (1000 classes, 224 px, batch 256 in a full run);
- (b) ``train``: a ResNet-18 step (bf16 autocast and channels-last on CUDA, ``kd_loss``) fed by each backend, against
  the same step on a batch already on the device (the ratio is the loader's cost);
- (c) ``record``: EfficientNet-Lite0 relabelling through the device backend (record_labels into a label file, and
  the same pixel path without the writer) against the teacher alone on device tensors;
- checks: the CUDA pixels against the CPU engines and TorchBackend (bit for bit), and torchvision's roi_align on
  the same batches as a reference op (not a backend).

Label files need zstandard and h5py: without them (the GPU machine has no zstandard) the label rows are skipped
and say so, and everything else still runs. Without the Lite0 packages the teacher is torchvision's
efficientnet_b0 with random weights (timing needs no trained weights), and the output says so.
Run: ``python -m benchmarks.gpu_feed [--quick] [--out DIR]``. What the rows run on is made in
benchmarks/_gpu_feed_setup.py; the timer, pixel checks, targets and table are benchmarks/_gpu_feed_measure.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

# the helpers import labelstore, loaders and torch only when called, after stub_missing has run
from benchmarks._gpu_feed_measure import issue_targets, pixel_checks, print_table, sync, timed
from benchmarks._gpu_feed_setup import (
    LABEL_CODECS, crop_batches, load_teacher, stub_missing, synthetic_images, write_label_file,
)

OUT = Path("results") / "gpu_feed"
PARTS = {"pixels", "replay", "train", "record"}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (64 images, 64 px, batch 32): about a minute on CPU")
    ap.add_argument("--images", type=int, default=10_000, help="fixed-size images (ImageNet-1K at 10 per class)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--size", type=int, default=224, help="crop output side")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per pixel/replay row (median counts)")
    ap.add_argument("--steps", type=int, default=30, help="timed training / teacher steps per row")
    ap.add_argument("--workers", type=int, default=None, help="TorchBackend worker processes (default: all cores)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    ap.add_argument("--ffcv", action=argparse.BooleanOptionalAction, default=None,
                    help="FFCVBackend rows (default: when FFCV is installed, except with --quick)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--parts", default="pixels,replay,train,record",
                    help="comma-separated subset of pixels (a), replay (a, with labels), train (b), record (c)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.image_size, args.size, args.batch_size, args.reps, args.steps = 64, 64, 64, 32, 2, 2
    args.parts = set(args.parts.split(","))
    if args.parts - PARTS:
        ap.error(f"--parts takes {', '.join(sorted(PARTS))}, got {args.parts}")
    missing = stub_missing()
    from benchmarks._scope import torch_threads

    with tempfile.TemporaryDirectory(prefix="gpu_feed_") as tmp, torch_threads(args.threads):
        return _run(args, Path(tmp), missing)


def _run(args, tmp: Path, missing: list[str]) -> dict:
    import numpy as np
    import torch

    from loaders import ReplayLoader, TorchBackend, kd_loss
    from loaders.images import ImageSource, as_image_source
    from loaders.mixing import to_model_input
    from loaders.device_backend import DeviceBackend

    t_start = time.perf_counter()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    W = args.workers if args.workers is not None else len(os.sched_getaffinity(0))
    S, bs, size = args.image_size, args.batch_size, (args.size, args.size)
    labels_ok = not ({"zstandard", "h5py"} & set(missing))
    notes, skipped = [], []
    if not labels_ok:
        why = f"{' and '.join(sorted({'zstandard', 'h5py'} & set(missing)))} not installed"
        notes.append(f"label files cannot be written or read here ({why}): replay rows, label-fed training rows and "
                     "record mode into a label file are skipped; pixels, pixel-fed training and record mode's pixel "
                     "path run")
        skipped += [f"replay ({why})", f"train with labels ({why})", f"record into a label file ({why})"]
    use_ffcv = (importlib.util.find_spec("ffcv") is not None) if args.ffcv is None and not args.quick else bool(args.ffcv)
    in_kw = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), device=dev,
                 dtype=torch.bfloat16 if cuda else torch.float32, channels_last=cuda)
    print(f"gpu_feed on {torch.cuda.get_device_name(dev) if cuda else platform.processor() or 'cpu'}: "
          f"{args.images} images {S} px -> {args.size} px, batch {bs}, {W} TorchBackend workers")

    source: ImageSource = as_image_source(synthetic_images(args.images, S))
    _ = source.fingerprint  # one hash, shared by every backend over this source
    backends = {"device": DeviceBackend(source, device=dev),
                "torch": TorchBackend(source, num_workers=W, pin_memory=cuda)}
    if not cuda:
        backends["torch_w0"] = TorchBackend(source)
        backends["device_batched"] = DeviceBackend(source, device=dev, engine="batched")
    if use_ffcv:
        from loaders import FFCVBackend, write_beton

        write_beton(source, tmp / "images.beton", num_workers=W, progress=False)
        backends["ffcv"] = FFCVBackend(tmp / "images.beton", num_workers=W)
    epochs = [crop_batches(source, e, size, bs) for e in range(2)]
    rows: list[dict] = []

    def add(kind, name, labels, seconds, images, **extra):
        rows.append(dict(kind=kind, backend=name, labels=labels, images=images, seconds=round(seconds, 4),
                         images_per_s=round(images / seconds, 1), **extra))

    # (a) pixels on the device, then ReplayLoader soft steps with labels; round-robin over the configurations
    configs = []
    for name, b in backends.items() if "pixels" in args.parts else ():
        def pixels(b=b):
            n = 0
            for x in b.iter_batches([cb for cb, _ in epochs[1]], size):
                n += len(x.to(dev, non_blocking=True))
            return n
        configs.append((("pixels", name, None), pixels))
    files = {}
    if labels_ok and args.parts & {"replay", "train"}:
        for codec in LABEL_CODECS:
            files[codec] = write_label_file(tmp / f"{codec.split(':')[0]}.h5", source, codec, epochs=2, bs=bs, size=size,
                                       classes=args.classes)
        for codec, path in files.items() if "replay" in args.parts else ():
            for name, b in backends.items():
                loader = ReplayLoader(path, b, "soft", epochs=2, pool="cycle", **in_kw)

                def replay(loader=loader):
                    loader.set_epoch(1)  # stored epoch 1, as the pixel rows; targets computed, as a loop reads them
                    return sum(len(step.images) + 0 * step.targets.shape[0] for step in loader)
                configs.append((("replay", name, codec), replay))
    times: dict = {key: [] for key, _ in configs}
    counts: dict = {}
    for rep in range(args.reps + 1):  # rep 0 warms up (compiles FFCV, starts workers, fills caches)
        for key, fn in configs:
            sync(dev)
            t = time.perf_counter()
            counts[key] = fn()
            sync(dev)
            if rep:
                times[key].append(time.perf_counter() - t)
    for key, _ in configs:
        add(*key, statistics.median(times[key]), counts[key], best_images_per_s=round(counts[key] / min(times[key]), 1))
    print(f"(a) done at {time.perf_counter() - t_start:.0f} s")

    px0 = next(iter(backends["device"].iter_batches([epochs[0][0][0]], size)))
    x0, t0 = to_model_input(px0, epochs[0][0][1], **in_kw), torch.randn(len(px0), args.classes, device=dev)
    # (b) ResNet-18 training steps: fed by each loader, against a batch already on the device
    if "train" in args.parts:
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=args.classes).to(dev, memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def train(x, teacher_logits):
            with torch.autocast(dev.type, torch.bfloat16, enabled=cuda):
                out = model(x)
            loss = kd_loss(out.float(), teacher_logits, temperature=4.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def feed_pixels(b):
            while True:
                for e in epochs:
                    for x, (_, mix) in zip(b.iter_batches([cb for cb, _ in e], size), e):
                        yield to_model_input(x, mix, **in_kw), t0[: len(x)]

        def feed_labels(path, b):
            loader = ReplayLoader(path, b, "soft", epochs=10_000, pool="cycle", **in_kw)
            while True:
                for step in loader:
                    yield step.images, step.logits

        feeds = {("upper", None): None}
        for name, b in backends.items():
            if name in ("torch_w0", "device_batched"):
                continue
            feeds[(name, None)] = (feed_pixels, b)
            for codec, path in files.items():
                if not args.quick or (codec == LABEL_CODECS[0] and name in ("device", "torch")):
                    feeds[(name, codec)] = (feed_labels, path, b)
        if args.quick:  # a minute on two busy cores: one pixels-only feed, one label feed per backend
            feeds.pop(("torch", None), None)
        for (name, codec), spec in feeds.items():
            it = None if spec is None else spec[0](*spec[1:])
            for _ in range(3 if cuda else 1):  # warm-up (cuDNN, the loader's first segment)
                train(*((x0, t0) if it is None else next(it)))
            sync(dev)
            t = time.perf_counter()
            for _ in range(args.steps):
                train(*((x0, t0) if it is None else next(it)))
            sync(dev)
            add("train", name, codec, time.perf_counter() - t, args.steps * bs)
            if it is not None:
                it.close()  # ends the loader's pass (worker prefetch, label thread) before the next row
        upper = next(r for r in rows if r["kind"] == "train" and r["backend"] == "upper")["images_per_s"]
        for r in rows:
            if r["kind"] == "train":
                r["vs_upper"] = round(r["images_per_s"] / upper, 3)
        print(f"(b) done at {time.perf_counter() - t_start:.0f} s")

    # (c) record mode through the device backend, against the teacher alone on device tensors
    teacher_name = None
    if "record" in args.parts:
        from loaders import record_labels

        LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # EfficientNet-Lite's input scaling (distill.teachers)

        teacher, teacher_name = load_teacher(dev, notes)
        rec_kw = dict(mean=LITE_MEAN, std=LITE_STD, device=dev)
        xt = to_model_input(px0, None, **rec_kw)
        nb = len(epochs[0])

        def alone():
            for _ in range(nb):
                teacher(xt)
            return nb * len(xt)
        add("record", "teacher_alone", None, *timed(dev, alone, 1))

        def pixel_path():  # record mode's loop without the writer: pixels, mix, normalise, teacher, logits to host
            n = 0
            for x, (_, mix) in zip(backends["device"].iter_batches([cb for cb, _ in epochs[0]], size), epochs[0]):
                n += len(teacher(to_model_input(x, mix, **rec_kw)).cpu())
            return n
        add("record", "device", "no writer", *timed(dev, pixel_path, 1))
        if labels_ok:
            from labelstore import CropPolicy, LabelWriter, MixPolicy

            runs = iter(range(100))

            def record():
                with LabelWriter(tmp / f"record{next(runs)}.h5", num_classes=args.classes, num_images=source.num_images,
                                 codec="topk:k=10", seed=0, image_fingerprint=source.fingerprint,
                                 image_sizes=source.image_sizes, crop_policy=CropPolicy(size=size),
                                 mix_policy=MixPolicy("cutmix")) as w:
                    return record_labels(w, backends["device"], teacher, epochs=1, batch_size=bs, progress=False,
                                         **rec_kw)["records"]
            add("record", "device", "topk:k=10", *timed(dev, record, 1))
        alone_rate = next(r for r in rows if r["backend"] == "teacher_alone")["images_per_s"]
        for r in rows:
            if r["kind"] == "record":
                r["vs_teacher"] = round(r["images_per_s"] / alone_rate, 3)
        print(f"(c) done at {time.perf_counter() - t_start:.0f} s")

    checks = pixel_checks(source, epochs[0][0][0], size, backends, dev)
    result = dict(device=str(dev), device_name=torch.cuda.get_device_name(dev) if cuda else platform.processor(),
                  torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(), workers=W,
                  threads=torch.get_num_threads(), load_average=os.getloadavg(),
                  args={k: str(v) for k, v in vars(args).items()}, missing=missing, teacher=teacher_name,
                  rows=rows, skipped=skipped, checks=checks, notes=notes, seconds=round(time.perf_counter() - t_start, 1))
    result["targets"] = issue_targets(rows, cuda)
    print_table(result)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    (args.out / f"gpu_feed_{tag}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}/gpu_feed_{tag}.json")
    return result


if __name__ == "__main__":
    main()
