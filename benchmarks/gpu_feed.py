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
Run: ``python -m benchmarks.gpu_feed [--quick] [--out DIR]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

OUT = Path("results") / "gpu_feed"
LABEL_CODECS = ("topk:k=10", "lowrank")
PARTS = {"pixels", "replay", "train", "record"}


def _stub_missing() -> list[str]:
    """Stand-ins for absent modules that labelstore imports at load time: using one raises, loading does not."""
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    missing = [m for m in ("zstandard", "h5py", "tqdm") if absent(m)]
    for name in missing:
        mod = types.ModuleType(name)
        if name == "tqdm":  # progress bars only: a silent stand-in
            class _Bar:
                def __init__(self, it=None, *a, **k):
                    self.it = it

                def __iter__(self):
                    return iter(self.it or ())

                def update(self, *a):
                    pass

                close = update

            mod.tqdm = _Bar
            auto = types.ModuleType("tqdm.auto")
            auto.tqdm = _Bar
            sys.modules["tqdm.auto"] = auto
        else:
            def _missing(attr, _name=name):
                if attr.startswith("__"):
                    raise AttributeError(attr)

                def fail(*a, **k):
                    raise RuntimeError(f"{_name} is not installed here: label files cannot be written or read")
                return type(attr, (Exception,), {}) if attr.endswith("Error") else fail
            mod.__getattr__ = _missing
        sys.modules[name] = mod
    return missing


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(dev, fn, reps: int) -> tuple[float, int]:
    """Median seconds over ``reps`` calls of ``fn`` (which returns an image count), after one untimed call."""
    fn()
    times, n = [], 0
    for _ in range(reps):
        _sync(dev)
        t = time.perf_counter()
        n = fn()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def _images(n: int, side: int, seed: int = 0):
    """uint8 (n, side, side, 3): smooth waves plus noise (the loaders' cost does not depend on the content)."""
    import numpy as np

    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    out = np.empty((n, side, side, 3), np.uint8)
    for a in range(0, n, 256):
        k = min(256, n - a)
        f = g.uniform(2, 12, (1, 1, 3)).astype(np.float32)
        out[a : a + k] = (100 + 100 * np.sin(f * yy[:, :, None] + 3 * f * xx[:, :, None])).astype(np.uint8)
        out[a : a + k] += g.integers(0, 40, (k, side, side, 3), dtype=np.uint8)
    return out


def _crop_batches(source, epoch: int, size, bs: int, seed: int = 0):
    """An epoch of crop records as record mode draws them (order, RandomResizedCrop + flip, CutMix)."""
    import numpy as np

    from labelstore import CropPolicy, MixPolicy, draw_crops, draw_mix, draw_order
    from loaders.backend import CropBatch

    n, sizes = source.num_images, np.asarray(source.image_sizes)
    order = draw_order(seed, epoch, n)
    out = []
    for b, a in enumerate(range(0, n, bs)):
        idx = order[a : a + bs]
        boxes, flips = draw_crops(CropPolicy(size=size), seed, epoch, idx, sizes[idx])
        out.append((CropBatch(idx, boxes, flips), draw_mix(MixPolicy("cutmix"), size, seed, epoch, b, len(idx))))
    return out


def _label_file(path, source, codec, *, epochs, bs, size, classes):
    """A label file of teacher-like logits with derived crops, orders and CutMix (as record mode writes them)."""
    import numpy as np

    from labelstore import CropPolicy, LabelWriter, MixPolicy, parse_codec_spec

    g = np.random.default_rng(1)

    def logits(n):
        z = g.normal(0, 2.0, (n, classes)).astype(np.float32)
        z[np.arange(n), g.integers(0, classes, n)] += 8.0
        return z

    c = parse_codec_spec(codec, classes)
    if c.needs_fit:
        c.fit(logits(2048))
    with LabelWriter(path, num_classes=classes, num_images=source.num_images, codec=c, seed=0,
                     image_fingerprint=source.fingerprint, image_sizes=source.image_sizes,
                     crop_policy=CropPolicy(size=size), mix_policy=MixPolicy("cutmix")) as w:
        for e in range(epochs):
            w.begin_epoch(e, bs)
            for b in range(w.num_batches(e)):
                w.write_batch(e, b, logits(len(w.batch_indices(e, b))))
    return path


def _teacher(dev, notes):
    """Lite0 with its weights, else its architecture with random weights, else torchvision's efficientnet_b0."""
    import torch

    try:
        from distill.teachers import load_efficientnet_lite

        model, name = load_efficientnet_lite("lite0", dev), "efficientnet-lite0 (pretrained weights)"
    except Exception as exc:  # noqa: BLE001 - any missing piece: fall back, and say so
        try:
            from efficientnet_lite_pytorch import EfficientNet

            model, name = EfficientNet.from_name("efficientnet-lite0"), "efficientnet-lite0 (random weights)"
        except Exception:  # noqa: BLE001
            import torchvision

            model, name = torchvision.models.efficientnet_b0(weights=None), "torchvision efficientnet_b0 (random weights)"
        notes.append(f"teacher: {name} ({type(exc).__name__}: {str(exc)[:120]})")
    model = model.eval().to(dev, memory_format=torch.channels_last)

    def run(x):
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=dev.type == "cuda"):
            return model(x.contiguous(memory_format=torch.channels_last)).float()

    return run, name


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
    missing = _stub_missing()
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

    source: ImageSource = as_image_source(_images(args.images, S))
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
    epochs = [_crop_batches(source, e, size, bs) for e in range(2)]
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
            files[codec] = _label_file(tmp / f"{codec.split(':')[0]}.h5", source, codec, epochs=2, bs=bs, size=size,
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
            _sync(dev)
            t = time.perf_counter()
            counts[key] = fn()
            _sync(dev)
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
            _sync(dev)
            t = time.perf_counter()
            for _ in range(args.steps):
                train(*((x0, t0) if it is None else next(it)))
            _sync(dev)
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

        teacher, teacher_name = _teacher(dev, notes)
        rec_kw = dict(mean=LITE_MEAN, std=LITE_STD, device=dev)
        xt = to_model_input(px0, None, **rec_kw)
        nb = len(epochs[0])

        def alone():
            for _ in range(nb):
                teacher(xt)
            return nb * len(xt)
        add("record", "teacher_alone", None, *_timed(dev, alone, 1))

        def pixel_path():  # record mode's loop without the writer: pixels, mix, normalise, teacher, logits to host
            n = 0
            for x, (_, mix) in zip(backends["device"].iter_batches([cb for cb, _ in epochs[0]], size), epochs[0]):
                n += len(teacher(to_model_input(x, mix, **rec_kw)).cpu())
            return n
        add("record", "device", "no writer", *_timed(dev, pixel_path, 1))
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
            add("record", "device", "topk:k=10", *_timed(dev, record, 1))
        alone_rate = next(r for r in rows if r["backend"] == "teacher_alone")["images_per_s"]
        for r in rows:
            if r["kind"] == "record":
                r["vs_teacher"] = round(r["images_per_s"] / alone_rate, 3)
        print(f"(c) done at {time.perf_counter() - t_start:.0f} s")

    checks = _checks(source, epochs[0][0][0], size, backends, dev)
    result = dict(device=str(dev), device_name=torch.cuda.get_device_name(dev) if cuda else platform.processor(),
                  torch=torch.__version__, python=platform.python_version(), cpu_count=os.cpu_count(), workers=W,
                  threads=torch.get_num_threads(), load_average=os.getloadavg(),
                  args={k: str(v) for k, v in vars(args).items()}, missing=missing, teacher=teacher_name,
                  rows=rows, skipped=skipped, checks=checks, notes=notes, seconds=round(time.perf_counter() - t_start, 1))
    result["targets"] = _targets(rows, cuda)
    _print(result)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    (args.out / f"gpu_feed_{tag}.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}/gpu_feed_{tag}.json")
    return result


def _checks(source, cb, size, backends, dev) -> dict:
    """Pixels of one batch from every path (bit for bit), and roi_align on the same crops as a reference op."""
    import numpy as np
    import torch

    from loaders.device_backend import DeviceBackend

    px = {name: next(iter(b.iter_batches([cb], size))).cpu() for name, b in backends.items() if name != "ffcv"}
    cpu = DeviceBackend(source, device="cpu") if dev.type == "cuda" else backends["device"]
    px["device_cpu_native"] = cpu.pixels(cb, size)
    px["device_cpu_batched"] = DeviceBackend(source, device="cpu", engine="batched").pixels(cb, size) \
        if dev.type == "cuda" else backends["device_batched"].pixels(cb, size)
    ref = px["device_cpu_native"]
    out = {f"{k}_equals_device_cpu_native": bool(torch.equal(v, ref)) for k, v in px.items() if k != "device_cpu_native"}
    if dev.type == "cuda":  # the reference op: roi_align on the same crops (float input, box-filter AA)
        from torchvision.ops import roi_align

        store = torch.from_numpy(np.ascontiguousarray(source.images[np.asarray(cb.indices)])).to(dev)
        x = store.permute(0, 3, 1, 2).float().contiguous()
        b = torch.as_tensor(cb.boxes, dtype=torch.float32, device=dev)
        rois = torch.cat([torch.arange(len(b), device=dev, dtype=torch.float32)[:, None], b[:, 1:2], b[:, 0:1],
                          b[:, 1:2] + b[:, 3:4], b[:, 0:1] + b[:, 2:3]], 1)
        f = lambda: roi_align(x, rois, size, 1.0, sampling_ratio=2, aligned=True).round_().clamp_(0, 255)  # noqa: E731
        sec, _ = _timed(dev, lambda: (f(), len(b))[1], 20)
        r = f().to(torch.uint8).cpu()
        r = torch.where(torch.as_tensor(cb.flips)[:, None, None, None], r.flip(-1), r)
        d = (r.int() - ref.int()).abs().float()
        out["roi_align_images_per_s"] = round(len(b) / sec, 1)
        out["roi_align_vs_device_mean_abs_diff"], out["roi_align_vs_device_max_abs_diff"] = round(float(d.mean()), 3), \
            int(d.max())
    return out


def _targets(rows, cuda: bool) -> dict:
    """The issue's targets, from this run's rows (None where the row did not run)."""
    def get(kind, name, labels=None):
        return next((r for r in rows if (r["kind"], r["backend"], r["labels"]) == (kind, name, labels)), None)

    def ratio(a, b):
        return round(a["images_per_s"] / b["images_per_s"], 3) if a and b else None

    t = {}
    if cuda:
        for codec in LABEL_CODECS:
            r = get("replay", "device", codec)
            t[f"device replay with {codec} labels >= 100,000 images/s"] = r and r["images_per_s"]
        for codec in (*LABEL_CODECS, None):
            r = get("train", "device", codec)
            t[f"ResNet-18 step fed by device ({codec or 'pixels, no labels'}) >= 0.95 x on-device"] = r and r["vs_upper"]
        for labels in ("topk:k=10", "no writer"):
            r = get("record", "device", labels)
            t[f"record mode ({labels}) >= 0.9 x teacher alone"] = r and r["vs_teacher"]
    else:
        t["CPU: device pixels >= TorchBackend pixels (worker processes)"] = ratio(get("pixels", "device"),
                                                                               get("pixels", "torch"))
        t["CPU: device pixels >= TorchBackend pixels (in process)"] = ratio(get("pixels", "device"),
                                                                         get("pixels", "torch_w0"))
    return t


def _print(result) -> None:
    print(f"\n{result['device_name']} ({result['device']}), torch {result['torch']}, teacher {result['teacher']}")
    head = f"{'kind':7s} {'backend':15s} {'labels':10s} {'images/s':>10s} {'ratio':>7s}"
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        ratio = r.get("vs_upper", r.get("vs_teacher"))
        print(f"{r['kind']:7s} {r['backend']:15s} {str(r['labels'] or '-'):10s} {r['images_per_s']:10.0f} "
              f"{'' if ratio is None else f'{ratio:.3f}':>7s}")
    print("(ratio: train rows vs the step on a batch already on the device; record rows vs the teacher alone)")
    for k, v in result["checks"].items():
        print(f"check {k}: {v}")
    for k, v in result["targets"].items():
        limit = 100_000 if "100,000" in k else 0.95 if "0.95" in k else 0.9 if "0.9" in k else 1.0
        print(f"target {k}: {v} {'not run' if v is None else 'met' if v >= limit else 'MISSED'}")
    for n in result["notes"]:
        print(f"note: {n}")


if __name__ == "__main__":
    main()
