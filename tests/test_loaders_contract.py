"""The record↔replay contract lives in the label file: record with one setting, replay with
another -> a clear error; replay with nothing given -> the recorded pixels exactly."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from labelstore import CropPolicy, LabelFile, LabelStoreError, LabelWriter, MixPolicy
from loaders import ReplayLoader, TorchBackend, record_labels

from test_loaders_replay import HashingTeacher, photo_crops

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def record(path, backend, *, size=None, gray=False, epochs=1, **kw):
    teacher = HashingTeacher(channels=1 if gray else 3)
    with LabelWriter(path, num_classes=6, num_images=backend.num_images, seed=5, image_fingerprint=backend.fingerprint,
                     image_sizes=backend.image_sizes, crop_policy=CropPolicy(size=size) if size else None,
                     mix_policy=MixPolicy("cutmix")) as w:
        record_labels(w, backend, teacher, epochs=epochs, batch_size=8, mean=MEAN[:1] if gray else MEAN,
                      std=STD[:1] if gray else STD, gray=gray, progress=False, **kw)
    return teacher


@pytest.fixture(scope="module")
def photos():
    return photo_crops(24, variable=False)


def test_the_file_records_the_pixels_and_replay_defaults_to_them(tmp_path, photos):
    images, labels = photos
    backend = TorchBackend(images, labels)
    teacher = record(tmp_path / "l.h5", backend)  # no crop size given: the images' own 40x40
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.crop_policy.size == (40, 40)
        assert f.pixels == {"crop_size": [40, 40], "mean": list(MEAN), "std": list(STD), "gray": False,
                            "dtype": "float32", **TorchBackend.pixel_path, "mixing": 2}
    loader = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1)  # nothing given
    seen = [hashlib.sha1(im.numpy().tobytes()).hexdigest() for step in loader for im in step.images]
    assert seen == teacher.seen  # the very pixels the teacher labelled


@pytest.mark.parametrize("override, what", [
    ({"mean": (0.485, 0.456, 0.406)}, "mean: recorded"),
    ({"std": (0.5, 0.5, 0.5)}, "std: recorded"),
    ({"dtype": torch.bfloat16}, "dtype: recorded 'float32', replay 'bfloat16'"),
])
def test_replay_with_other_settings_is_refused_unless_overridden(tmp_path, photos, override, what):
    images, labels = photos
    backend = TorchBackend(images, labels)
    record(tmp_path / "l.h5", backend)
    with pytest.raises(LabelStoreError, match=what.replace("(", r"\(").replace(")", r"\)")):
        ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, **override)
    step = next(iter(ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, allow_pixel_mismatch=True, **override)))
    assert step.images.shape == (8, 3, 40, 40)


def test_gray_is_recorded(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (16, 20, 20), dtype=np.uint8)
    backend = TorchBackend(raw, np.arange(16) % 6)
    teacher = record(tmp_path / "g.h5", backend, gray=True)
    loader = ReplayLoader(tmp_path / "g.h5", backend, "soft", epochs=1)
    steps = list(loader)
    assert steps[0].images.shape[1] == 1
    assert [hashlib.sha1(im.numpy().tobytes()).hexdigest() for s in steps for im in s.images] == teacher.seen
    with pytest.raises(LabelStoreError, match="gray: recorded True, replay False"):
        ReplayLoader(tmp_path / "g.h5", backend, "soft", epochs=1, gray=False)


def test_another_backend_is_refused(tmp_path, photos):
    pytest.importorskip("ffcv")
    from loaders import FFCVBackend, write_beton

    images, labels = photos
    record(tmp_path / "l.h5", TorchBackend(images, labels))
    write_beton(images, tmp_path / "i.beton", labels=labels, progress=False)
    ffcv = FFCVBackend(tmp_path / "i.beton", num_workers=1, copy=True)
    with pytest.raises(LabelStoreError, match="backend: recorded 'torch', replay 'ffcv'.*not bit-identical"):
        ReplayLoader(tmp_path / "l.h5", ffcv, "soft", epochs=1)
    assert next(iter(ReplayLoader(tmp_path / "l.h5", ffcv, "soft", epochs=1, allow_pixel_mismatch=True))).images.shape[0] == 8


def test_variable_size_images_need_a_crop_size(tmp_path):
    images, labels = photo_crops(12, variable=True)
    backend = TorchBackend(images, labels)
    with pytest.raises(LabelStoreError, match="different sizes, so there is no natural crop size"):
        record(tmp_path / "v.h5", backend)
    record(tmp_path / "v.h5", backend, size=(32, 32))
    with LabelFile(tmp_path / "v.h5") as f:
        assert f.pixels["crop_size"] == [32, 32] and f.crop_policy.size == (32, 32)


def test_a_resumed_journal_keeps_its_pixel_settings(tmp_path, photos):
    images, labels = photos
    backend = TorchBackend(images, labels)
    kw = dict(num_classes=6, num_images=24, seed=5, image_sizes=backend.image_sizes, mix_policy=MixPolicy("cutmix"))
    w = LabelWriter(tmp_path / "r.h5", **kw)
    record_labels(w, backend, HashingTeacher(), epochs=1, batch_size=8, mean=MEAN, std=STD, progress=False)
    w.close()  # interrupted before finalize
    w = LabelWriter(tmp_path / "r.h5", **kw)
    with pytest.raises(LabelStoreError, match="other pixel settings"):
        record_labels(w, backend, HashingTeacher(), epochs=1, batch_size=8, mean=(0.5,) * 3, std=STD, progress=False)
    w = LabelWriter(tmp_path / "r.h5", **kw)
    summary = record_labels(w, backend, HashingTeacher(), epochs=2, batch_size=8, mean=MEAN, std=STD, progress=False)
    w.finalize()
    assert summary["batches_skipped"] == 3 and LabelFile(tmp_path / "r.h5").pixels["mean"] == list(MEAN)


def test_imported_files_carry_no_contract(tmp_path, photos):
    images, labels = photos
    backend = TorchBackend(images, labels)
    with LabelWriter(tmp_path / "i.h5", num_classes=6, num_images=24, image_sizes=(40, 40), crops="explicit") as w:
        w.begin_epoch(0, 24)
        w.write_batch(0, 0, np.zeros((24, 6), np.float32), boxes=np.tile([0, 0, 40, 40], (24, 1)), flips=np.zeros(24, bool))
    assert LabelFile(tmp_path / "i.h5").pixels is None
    ReplayLoader(tmp_path / "i.h5", backend, "soft", epochs=1, mean=(0.1,) * 3)  # nothing to check against
