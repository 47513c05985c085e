"""What benchmarks/gpu_feed.py measures on, made before any row runs: stand-ins for modules this
machine lacks (so labelstore still imports), synthetic images, an epoch of crop records, label
files, and the record-mode teacher.

Everything past the standard library is imported inside the functions: stub_missing must run
before labelstore is first imported (the GPU machine has no zstandard).
"""
from __future__ import annotations

import importlib.util
import sys
import types

LABEL_CODECS = ("topk:k=10", "lowrank")  # the label rows' codecs (replay, train, the issue's targets)


def stub_missing() -> list[str]:
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


def synthetic_images(n: int, side: int, seed: int = 0):
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


def crop_batches(source, epoch: int, size, bs: int, seed: int = 0):
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


def write_label_file(path, source, codec, *, epochs, bs, size, classes):
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


def load_teacher(dev, notes):
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
