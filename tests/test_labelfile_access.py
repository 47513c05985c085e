"""LabelFile as a Python container: iteration, negative and slice indices, short reprs, image_history."""
from __future__ import annotations

import timeit

import numpy as np
import pytest

from conftest import write_label_set
from labelstore import LabelFile, LabelStoreError, LabelWriter, MixPolicy


def test_iterating_a_file_is_every_stored_batch_in_order(label_file):
    path, written = label_file
    with LabelFile(path) as f:
        seen = [(b.epoch, b.batch) for b in f]
        assert seen == sorted(written) and len(seen) == len(f)
        assert [(b.epoch, b.batch) for b in f.batches(-1)] == [k for k in sorted(written) if k[0] == 2]
        for b in f:
            np.testing.assert_array_equal(b.logits, written[(b.epoch, b.batch)][0].astype(np.float16).astype(np.float32))
        with pytest.raises(LabelStoreError, match="epoch 3 is out of range"):
            f.batches(3)  # said when asked, not at the first next()


def test_negative_and_slice_indices(label_file):
    path, _ = label_file
    with LabelFile(path) as f:  # 3 epochs of 4 batches
        assert (f[-1, -1].epoch, f[-1, -1].batch) == (2, 3)
        assert [(b.epoch, b.batch) for b in f[0, 1:3]] == [(0, 1), (0, 2)]
        assert [(b.epoch, b.batch) for b in f[0, ::-2]] == [(0, 3), (0, 1)]
        assert [(b.epoch, b.batch) for b in f[:, -1]] == [(0, 3), (1, 3), (2, 3)]
        assert [len(row) for row in f[1:, :]] == [4, 4]
        np.testing.assert_array_equal(f[-3, -4].logits, f[0, 0].logits)
        for key, msg in [((3, 0), "epoch 3 is out of range: the file stores epochs 0..2 \\(or -3..-1"),
                         ((-4, 0), "epoch -4 is out of range"), ((0, -5), "batch -5 is out of range: this epoch has"),
                         ((0, 1.5), "batch index must be an integer or a slice"), ((0,), "index a LabelFile by"),
                         (0, "f.batches\\(epoch\\) iterates one epoch")]:
            with pytest.raises(LabelStoreError, match=msg):
                f[key]


def test_reprs_are_short(tmp_path):
    path = tmp_path / "big.h5"
    write_label_set(path, num_images=40, num_classes=1000, epochs=1, batch_size=32, mix_policy=MixPolicy("cutmix"))
    with LabelFile(path) as f:
        text = repr(f[0, 0])
        assert len(text) < 160 and "32 records" in text and "32x1000 float32" in text and "cutmix lam" in text
        assert "logits not read" in repr(f.read_crops(0, 1))
        hist = f.image_history(3)
        assert len(repr(hist)) < 120 and "1 records" in repr(hist)
        with pytest.raises(LabelStoreError, match="read without its labels"):
            f.read_crops(0, 0).probs(2.0)


def _partial_file(path):
    """3 epochs of 5 batches, epoch 2 partial (batches 0, 1 and 4 stored), explicit everything."""
    g = np.random.default_rng(4)
    with LabelWriter(path, num_classes=7, num_images=37, seed=9, image_sizes=(20, 20), crops="explicit",
                     orders="explicit", mix="explicit", mix_policy=MixPolicy("mixup")) as w:
        for e in range(3):
            present = [0, 1, 4] if e == 2 else None
            w.begin_epoch(e, 8, g.permutation(37), batches=present)
            for b in present or range(5):
                n = len(w.batch_indices(e, b))
                boxes = np.stack([g.integers(0, 5, n), g.integers(0, 5, n), g.integers(5, 16, n), g.integers(5, 16, n)], 1)
                w.write_batch(e, b, g.normal(size=(n, 7)).astype(np.float32), boxes=boxes, flips=g.random(n) < 0.5,
                              mix=w.derived_mix(e, b))


@pytest.mark.parametrize("mode", ["derived", "explicit", "partial"])
def test_image_history_is_the_records_read_sample_returns(tmp_path, mode):
    path = tmp_path / "l.h5"
    if mode == "partial":
        _partial_file(path)
    else:
        write_label_set(path, num_images=37, num_classes=7, epochs=5, batch_size=8, crops=mode, orders=mode, mix=mode,
                        mix_policy=MixPolicy("cutmix"))
    with LabelFile(path) as f:
        for image in range(f.num_images):
            h = f.image_history(image)
            stored = [e for e in range(f.num_epochs) if f.locate(e, image)[0] in f.stored_batches(e)]
            assert list(h.epochs) == stored and len(h) == len(stored)
            for k, e in enumerate(stored):
                one = f.read_sample(e, image)
                assert (h.batches[k], h.positions[k]) == f.locate(e, image)
                np.testing.assert_array_equal(h.logits[k], one.logits[0])
                np.testing.assert_array_equal(h.boxes[k], one.boxes[0])
                assert h.flips[k] == one.flips[0] and h.mixes[k] == one.mix
            np.testing.assert_allclose(h.probs(2.0).sum(1), 1.0, rtol=1e-5)
        assert (mode == "partial") == any(len(f.image_history(i)) < f.num_epochs for i in range(f.num_images))
        with pytest.raises(LabelStoreError, match="image 37 is out of range"):
            f.image_history(37)


def test_image_history_is_at_least_ten_times_faster_than_a_loop_of_read_sample(tmp_path):
    path = tmp_path / "l.h5"
    write_label_set(path, num_images=400, num_classes=10, epochs=30, batch_size=16, mix_policy=MixPolicy("cutmix"))
    loop_file, history_file = LabelFile(path), LabelFile(path)  # neither warms the other's caches
    images = iter(range(0, 10**6, 7))

    def loop():
        i = next(images) % 400
        return [loop_file.read_sample(e, i) for e in range(30)]

    def history():
        return history_file.image_history(next(images) % 400)

    loop(), history()
    slow = min(timeit.repeat(loop, number=3, repeat=5))
    fast = min(timeit.repeat(history, number=3, repeat=5))
    assert slow / fast >= 10, f"image_history {fast / 3 * 1e3:.2f} ms vs read_sample loop {slow / 3 * 1e3:.2f} ms"
