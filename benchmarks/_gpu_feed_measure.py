"""How benchmarks/gpu_feed.py times and judges its rows: a device-synchronised timer, the
bit-for-bit pixel checks (with torchvision's roi_align as a reference op), the issue's targets
and the printed table. torch and the loaders are imported inside the functions, after
gpu_feed has stubbed what this machine lacks.
"""
from __future__ import annotations

import statistics
import time

from benchmarks._gpu_feed_setup import LABEL_CODECS


def sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(dev, fn, reps: int) -> tuple[float, int]:
    """Median seconds over ``reps`` calls of ``fn`` (which returns an image count), after one untimed call."""
    fn()
    times, n = [], 0
    for _ in range(reps):
        sync(dev)
        t = time.perf_counter()
        n = fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def pixel_checks(source, cb, size, backends, dev) -> dict:
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
    if dev.type == "cuda":  # the issue's reference op: roi_align on the same crops (float input, box-filter AA)
        from torchvision.ops import roi_align

        store = torch.from_numpy(np.ascontiguousarray(source.images[np.asarray(cb.indices)])).to(dev)
        x = store.permute(0, 3, 1, 2).float().contiguous()
        b = torch.as_tensor(cb.boxes, dtype=torch.float32, device=dev)
        rois = torch.cat([torch.arange(len(b), device=dev, dtype=torch.float32)[:, None], b[:, 1:2], b[:, 0:1],
                          b[:, 1:2] + b[:, 3:4], b[:, 0:1] + b[:, 2:3]], 1)
        f = lambda: roi_align(x, rois, size, 1.0, sampling_ratio=2, aligned=True).round_().clamp_(0, 255)  # noqa: E731
        sec, _ = timed(dev, lambda: (f(), len(b))[1], 20)
        r = f().to(torch.uint8).cpu()
        r = torch.where(torch.as_tensor(cb.flips)[:, None, None, None], r.flip(-1), r)
        d = (r.int() - ref.int()).abs().float()
        out["roi_align_images_per_s"] = round(len(b) / sec, 1)
        out["roi_align_vs_device_mean_abs_diff"], out["roi_align_vs_device_max_abs_diff"] = round(float(d.mean()), 3), \
            int(d.max())
    return out


def issue_targets(rows, cuda: bool) -> dict:
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


def print_table(result) -> None:
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
