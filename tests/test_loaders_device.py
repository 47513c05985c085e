"""DeviceBackend on CPU tensors: the batched kernel CUDA runs, its pixels, exact replay through it, its sources,
memory refusals. (The CUDA run itself is benchmarks/gpu_feed.py's job, on a machine with a GPU.)"""
from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2.functional._geometry import _do_native_uint8_resize_on_cpu

from labelstore import CropPolicy, LabelFile, LabelStoreError, LabelWriter, MixPolicy, draw_crops
from loaders import ReplayLoader, TorchBackend, record_labels
from loaders.backend import CropBatch
from loaders.device_backend import DeviceBackend
from loaders.device_resample import axis_weights

from test_loaders_replay import MEAN, STD, HashingTeacher, photo_crops


def random_crops(sizes: np.ndarray, n: int, seed: int) -> CropBatch:
    """Any crop at all: 1-pixel to whole-image boxes, random flips."""
    g = np.random.default_rng(seed)
    idx = g.integers(0, len(sizes), n)
    s = sizes[idx]
    h, w = (np.array([g.integers(1, v + 1) for v in s[:, k]]) for k in (0, 1))
    top = np.array([g.integers(0, a - b + 1) for a, b in zip(s[:, 0], h)])
    left = np.array([g.integers(0, a - b + 1) for a, b in zip(s[:, 1], w)])
    return CropBatch(idx, np.stack([top, left, h, w], 1), g.random(n) < 0.5)


def reference(images, cb: CropBatch, size) -> torch.Tensor:
    """torch's own uint8 antialiased bilinear resize, crop by crop (what the batched kernel reproduces)."""
    out = []
    for i, (t, l, h, w), f in zip(cb.indices, cb.boxes, cb.flips):
        im = np.asarray(images[i])
        x = torch.from_numpy(np.ascontiguousarray(im[t : t + h, l : l + w]))
        x = (x[None] if x.ndim == 2 else x.permute(2, 0, 1)[:3])[None]
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=list(size), mode="bilinear", antialias=True)
        out.append((x.flip(-1) if f else x)[0].expand(3, -1, -1))
    return torch.stack(out)


def image_sets():
    g = np.random.default_rng(0)
    smooth = lambda h, w: (128 + 90 * np.sin(np.arange(h)[:, None] / 3.0) * np.cos(np.arange(w) / 5.0))  # noqa: E731
    return {
        "fixed": g.integers(0, 256, (10, 48, 64, 3)).astype(np.uint8),
        "gray": smooth(40, 40)[None].repeat(8, 0).astype(np.uint8) + g.integers(0, 4, (8, 40, 40)).astype(np.uint8),
        "rgba": g.integers(0, 256, (6, 30, 20, 4)).astype(np.uint8),
        "variable": [g.integers(0, 256, (int(h), int(w), 3)).astype(np.uint8) for h, w in g.integers(1, 160, (12, 2))],
        "mixed": [g.integers(0, 256, (20, 30)).astype(np.uint8), g.integers(0, 256, (25, 15, 3)).astype(np.uint8)],
    }


@pytest.mark.parametrize("name", list(image_sets()))
@pytest.mark.parametrize("size", [(24, 24), (37, 90), (1, 1), (200, 160)])
def test_batched_kernel_gives_torchs_uint8_resize(name, size):
    images = image_sets()[name]
    native, batched = DeviceBackend(images, device="cpu"), DeviceBackend(images, device="cpu", engine="batched")
    cb = random_crops(native.image_sizes, 24, seed=zlib.crc32(f"{name}{size}".encode()))
    ref = reference(images, cb, size)
    for backend in (native, batched):
        px = backend.pixels(cb, size)
        assert px.dtype == torch.uint8 and px.shape == (24, 3, *size) and px.is_contiguous()
        assert torch.equal(px, ref), f"{backend.engine}: max diff {(px.int() - ref.int()).abs().max()}"


def test_agreement_with_torch_backend_and_large_shrinks():
    """Information: against TorchBackend (torchvision's resize) on RandomResizedCrop batches, plus shrinks of
    10x and more, where weight precision passes 15 bits and the kernel switches to float64."""
    images = np.random.default_rng(1).integers(0, 256, (16, 320, 256, 3)).astype(np.uint8)
    torch_b, dev = TorchBackend(images), DeviceBackend(images, device="cpu", engine="batched")
    idx = np.arange(16).repeat(4)
    for size, scale in (((224, 224), (0.08, 1.0)), ((24, 24), (0.5, 1.0))):
        boxes, flips = draw_crops(CropPolicy(size=size, scale=scale), 0, 0, idx, dev.image_sizes[idx])
        cb = CropBatch(idx, boxes, flips)
        a, b = next(iter(torch_b.iter_batches([cb], size))), dev.pixels(cb, size)
        d = (a.int() - b.int()).abs().float()
        print(f"{size} scale {scale}: vs TorchBackend mean abs diff {d.mean():.4f}, max {d.max():.0f}")
        if _do_native_uint8_resize_on_cpu(InterpolationMode.BILINEAR):  # torchvision runs torch's uint8 kernel
            assert d.max() == 0
    _, _, precision, _ = axis_weights(np.array([320, 25, 1]), 24)
    assert precision.tolist()[0] > 15 >= precision.tolist()[1]  # 320 -> 24 takes the float64 path


def test_axis_weights_sum_to_one_and_stay_inside():
    xmin, q, p, taps = axis_weights(np.arange(1, 300), 37)
    total = q.sum(-1) / np.exp2(p)[:, None]
    assert np.abs(total - 1).max() < 3e-3 and (q >= 0).all() and (q < 1 << 15).all()
    last = xmin + (q > 0).cumsum(-1).argmax(-1)
    assert (xmin >= 0).all() and (last < np.arange(1, 300)[:, None]).all()


@pytest.mark.parametrize("variable,engine", [(False, "native"), (False, "batched"), (True, "native"), (True, "batched")])
def test_record_through_it_then_replay_shows_the_labelled_pixels(tmp_path, variable, engine):
    images, labels = photo_crops(30, variable=variable)
    backend = DeviceBackend(images, labels, device="cpu", engine=engine)
    teacher = HashingTeacher()
    with LabelWriter(tmp_path / "l.h5", num_classes=6, num_images=30, seed=3, image_fingerprint=backend.fingerprint,
                     image_sizes=backend.image_sizes, crop_policy=CropPolicy(size=(24, 24)),
                     mix_policy=MixPolicy("cutmix")) as w:
        record_labels(w, backend, teacher, epochs=2, batch_size=8, mean=MEAN, std=STD, progress=False)
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.pixels["backend"] == "device:cpu" and "torch's uint8 resize" in f.pixels["interpolation"]
    loader = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=2)
    seen = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen += [hashlib.sha1(im.numpy().tobytes()).hexdigest() for step in loader for im in step.images]
    assert seen == teacher.seen and len(set(seen)) > 50  # bit-identical, every record, same order
    other = DeviceBackend(images, labels, device="cpu", engine="native" if engine == "batched" else "batched")
    again = [hashlib.sha1(im.numpy().tobytes()).hexdigest() for step in ReplayLoader(tmp_path / "l.h5", other, "soft",
                                                                                     epochs=1) for im in step.images]
    assert again == teacher.seen[: len(again)]  # the other engine: the same pixels, the same contract
    with pytest.raises(LabelStoreError, match="backend: recorded 'device:cpu', replay 'torch'"):
        ReplayLoader(tmp_path / "l.h5", TorchBackend(images, labels), "soft", epochs=2)


def test_sources_give_the_same_images_and_fingerprint(tmp_path):
    from PIL import Image

    images, labels = photo_crops(12, variable=True)
    for i, (im, y) in enumerate(zip(images, labels)):
        (tmp_path / f"c{y}").mkdir(exist_ok=True)
        Image.fromarray(im).save(tmp_path / f"c{y}" / f"{i:03d}.png")
    order = [i for y in sorted(set(labels)) for i in range(12) if labels[i] == y]  # the folder's sorted order
    listed = DeviceBackend([images[i] for i in order], device="cpu")
    cb = random_crops(listed.image_sizes, 20, seed=4)
    for other in (DeviceBackend(tmp_path, device="cpu"), DeviceBackend(list(zip([images[i] for i in order], labels[order])),
                                                                        device="cpu")):
        assert other.fingerprint == listed.fingerprint == TorchBackend([images[i] for i in order]).fingerprint
        assert np.array_equal(other.labels, labels[order])
        assert torch.equal(other.pixels(cb, (20, 20)), listed.pixels(cb, (20, 20)))


def test_a_beton_without_ffcv_reads_the_same_images(tmp_path):
    pytest.importorskip("ffcv")  # to write it; reading it back needs numpy only
    from loaders import write_beton

    images, labels = photo_crops(10, variable=True)
    gray = np.random.default_rng(2).integers(0, 256, (6, 20, 28)).astype(np.uint8)
    for name, imgs, ys in (("var", images, labels), ("gray", gray, np.arange(6) % 2)):
        info = write_beton(imgs, tmp_path / f"{name}.beton", labels=ys, num_workers=1, progress=False)
        b, ref = DeviceBackend(tmp_path / f"{name}.beton", device="cpu"), DeviceBackend(imgs, device="cpu")
        assert (b.fingerprint, b.channels) == (info.fingerprint, ref.channels)
        assert np.array_equal(b.labels, ys) and b.pixel_path == ref.pixel_path
        cb = random_crops(b.image_sizes, 16, seed=1)
        assert torch.equal(b.pixels(cb, (16, 16)), ref.pixels(cb, (16, 16)))
    write_beton(images, tmp_path / "j.beton", labels=labels, write_mode="jpg", num_workers=1, progress=False)
    assert "JPEG beton" in DeviceBackend(tmp_path / "j.beton", device="cpu").pixel_path["interpolation"]
    (tmp_path / "var.beton.meta.json").write_text((tmp_path / "gray.beton.meta.json").read_text())
    with pytest.raises(LabelStoreError, match="does not describe var.beton"):
        DeviceBackend(tmp_path / "var.beton", device="cpu")


def test_a_set_that_does_not_fit_is_refused_with_the_numbers():
    images = np.zeros((100, 64, 64, 3), np.uint8)
    with pytest.raises(LabelStoreError, match=r"100 images as uint8 \(3 channel\(s\)\) need 1\.2 MiB in host memory, "
                                              r"where .* are free and .* are kept"):
        DeviceBackend(images, device="cpu", reserve_bytes=1 << 60)


def test_host_storage_gives_the_same_pixels():
    images = image_sets()["variable"]
    host, dev = (DeviceBackend(images, device="cpu", engine="batched", storage=s) for s in ("host", "device"))
    assert host.storage == "host" and dev.storage == "device"
    cb = random_crops(dev.image_sizes, 20, seed=7)
    assert torch.equal(host.pixels(cb, (30, 30)), dev.pixels(cb, (30, 30)))


def test_iter_batches_contract():
    images = image_sets()["fixed"]
    b = DeviceBackend(images, device="cpu", engine="batched")
    cbs = [random_crops(b.image_sizes, n, seed=n) if n else CropBatch(np.zeros(0, np.int64), np.zeros((0, 4)),
                                                                      np.zeros(0, bool)) for n in (5, 0, 3)]
    assert [tuple(x.shape) for x in b.iter_batches(cbs, (8, 9))] == [(5, 3, 8, 9), (0, 3, 8, 9), (3, 3, 8, 9)]
    with pytest.raises(LabelStoreError, match="lies outside"):
        b.pixels(CropBatch(np.array([0]), np.array([[40, 0, 20, 20]]), np.array([False])), (8, 8))
    with pytest.raises(LabelStoreError, match="engine must be"):
        DeviceBackend(images, device="cpu", engine="fast")
