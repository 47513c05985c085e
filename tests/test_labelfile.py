"""Writer and reader: round trips, derived vs explicit crops, resume, errors, processes."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal

import numpy as np
import pytest

from labelstore import (
    CropPolicy, LabelFile, LabelStoreError, LabelWriter, MixPolicy, draw_crops, draw_order, logits_from_probs,
)
from labelstore.batch import softmax
from conftest import make_logits, write_label_set


def fp16(x):
    return x.astype(np.float16).astype(np.float32)


def test_round_trip_derived(label_file):
    path, written = label_file
    with LabelFile(path) as f:
        assert (f.num_epochs, f.num_images, f.num_classes) == (3, 50, 10)
        assert f.num_batches(0) == 4 and len(f) == 12
        for (e, b), (logits, _) in written.items():
            batch = f[e, b]
            np.testing.assert_array_equal(batch.logits, fp16(logits))
            order = draw_order(7, e, 50)
            np.testing.assert_array_equal(batch.indices, order[b * 16 : b * 16 + len(logits)])
            boxes, flips = draw_crops(CropPolicy(size=(24, 24)), 7, e, batch.indices, np.full((len(batch), 2), 32))
            np.testing.assert_array_equal(batch.boxes, boxes)
            np.testing.assert_array_equal(batch.flips, flips)
            assert batch.mix is None
        assert len(f[0, 3]) == 50 - 3 * 16  # the short last batch


def test_derived_crops_are_valid_and_vary():
    sizes = np.array([[32, 32], [480, 640], [300, 17], [5, 900]] * 250)
    boxes, flips = draw_crops(CropPolicy(), 3, 1, np.arange(1000), sizes)
    top, left, h, w = boxes.T
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    assert 0.4 < flips.mean() < 0.6
    again, _ = draw_crops(CropPolicy(), 3, 1, np.arange(1000), sizes)
    other, _ = draw_crops(CropPolicy(), 3, 2, np.arange(1000), sizes)
    np.testing.assert_array_equal(boxes, again)
    normal = np.arange(1000) % 4 < 2  # the two extreme aspect ratios always fall back to a centre crop
    assert (boxes != other)[normal].any(axis=1).mean() > 0.9
    assert (boxes == other)[~normal].all()
    # keyed by (seed, epoch, index): independent of which other images are drawn with it
    part, _ = draw_crops(CropPolicy(), 3, 1, np.arange(500, 510), sizes[500:510])
    np.testing.assert_array_equal(part, boxes[500:510])


def test_round_trip_explicit_crops_orders_and_mix(tmp_path):
    path = tmp_path / "x.h5"
    mp_ = MixPolicy("cutmix", alpha=1.0)
    written = write_label_set(path, crops="explicit", orders="explicit", mix_policy=mp_, mix="explicit")
    with LabelFile(path) as f:
        assert (f.crops_mode, f.orders_mode, f.mix_mode) == ("explicit", "explicit", "explicit")
        for (e, b), (logits, kw) in written.items():
            batch = f[e, b]
            np.testing.assert_array_equal(batch.boxes, kw["boxes"])
            np.testing.assert_array_equal(batch.flips, kw["flips"])
            assert batch.mix == kw["mix"] and batch.mix.kind == "cutmix"
            assert 0 <= batch.mix.lam <= 1 and sorted(batch.mix.partner) == list(range(len(batch)))


def test_derived_mix_matches_explicit(tmp_path):
    mp_ = MixPolicy("mixup", alpha=0.8)
    write_label_set(tmp_path / "d.h5", mix_policy=mp_, mix="derived")
    write_label_set(tmp_path / "x.h5", mix_policy=mp_, mix="explicit")
    with LabelFile(tmp_path / "d.h5") as d, LabelFile(tmp_path / "x.h5") as x:
        assert d.byte_breakdown["mix"] == 0 < x.byte_breakdown["mix"]
        for e in range(3):
            for b in range(4):
                assert d[e, b].mix == x[e, b].mix


def test_read_sample_and_probs(label_file):
    path, written = label_file
    with LabelFile(path) as f:
        for image in (0, 17, 49):
            s = f.read_sample(2, image)
            assert s.indices[0] == image
            full = f[2, s.batch]
            pos = list(full.indices).index(image)
            np.testing.assert_array_equal(s.logits[0], full.logits[pos])
            np.testing.assert_array_equal(s.boxes[0], full.boxes[pos])
        p = f[1, 0].probs(T=4.0)
        np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)
        z = fp16(written[(1, 0)][0]) / 4.0
        ref = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(p, ref / ref.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_probability_source_keeps_every_temperature():
    rng = np.random.default_rng(1)
    z = make_logits(rng, 8, 100)
    back = logits_from_probs(softmax(z, 20.0), 20.0)
    for T in (1.0, 4.0, 20.0):
        np.testing.assert_allclose(softmax(back, T), softmax(z, T), atol=2e-5)


def test_memory_bounded_caches(tmp_path):
    path = tmp_path / "many.h5"
    write_label_set(path, epochs=12, num_images=20, batch_size=10)
    with LabelFile(path) as f:
        for b in f.batches():
            pass
        assert len(f._chunk_cache) <= 4 and len(f._order_cache) <= 4


# -- resume ------------------------------------------------------------------------------
def _relabel(path, kill_after=None):
    """A relabel run: resumes the journal, writes the rest; SIGKILLs itself before write ``kill_after``."""
    rng = np.random.default_rng(0)
    w = LabelWriter(path, num_classes=10, num_images=50, codec="dense16", seed=7, image_sizes=(32, 32))
    count = skipped = 0
    for e in range(3):
        w.begin_epoch(e, 16)
        for b in range(w.num_batches(e)):
            logits = make_logits(rng, len(w.batch_indices(e, b)), 10)  # the same stream in every run
            if w.is_written(e, b):
                skipped += 1
                continue
            if count == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            w.write_batch(e, b, logits)
            count += 1
    w.finalize()
    return skipped


@pytest.mark.parametrize("kill_after", [0, 5, 11])
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, kill_after):
    ctx = mp.get_context("fork")
    path = tmp_path / "r.h5"
    p = ctx.Process(target=_relabel, args=(path, kill_after))
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    assert not path.exists()  # never readable as if complete
    with pytest.raises(LabelStoreError, match="no label file"):
        LabelFile(path)
    # a torn frame at the end, as a kill in the middle of a write leaves it
    with open(tmp_path / "r.h5.partial" / "journal.bin", "ab") as fh:
        fh.write(b"LSJ1\x02\x00\x00\x00garbage")
    assert _relabel(path) == kill_after
    ref = tmp_path / "ref.h5"
    _relabel(ref)
    with LabelFile(path) as a, LabelFile(ref) as b:
        for x, y in zip(a.batches(), b.batches()):
            np.testing.assert_array_equal(x.logits, y.logits)
            np.testing.assert_array_equal(x.indices, y.indices)
            np.testing.assert_array_equal(x.boxes, y.boxes)
    assert not (tmp_path / "r.h5.partial").exists()


def test_resume_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    w = LabelWriter(path, num_classes=10, num_images=50, codec="dense16", seed=7, image_sizes=(32, 32))
    w.begin_epoch(0, 16)
    w.close()
    with pytest.raises(LabelStoreError, match="different settings.*seed"):
        LabelWriter(path, num_classes=10, num_images=50, codec="dense16", seed=8, image_sizes=(32, 32))


# -- bad input ---------------------------------------------------------------------------
def test_bad_writes_are_rejected_and_lose_nothing(tmp_path):
    path = tmp_path / "bad.h5"
    rng = np.random.default_rng(0)
    w = LabelWriter(path, num_classes=10, num_images=20, codec="dense16", seed=1, image_sizes=(8, 8))
    with pytest.raises(LabelStoreError, match="begin_epoch"):
        w.write_batch(0, 0, make_logits(rng, 10, 10))
    w.begin_epoch(0, 10)
    good = make_logits(rng, 10, 10)
    w.write_batch(0, 0, good)
    nan = good.copy()
    nan[3, 4] = np.nan
    with pytest.raises(LabelStoreError, match="NaN or Inf"):
        w.write_batch(0, 1, nan)
    with pytest.raises(LabelStoreError, match=r"shape \(10, 10\)"):
        w.write_batch(0, 1, make_logits(rng, 10, 11))
    with pytest.raises(LabelStoreError, match="already written"):
        w.write_batch(0, 0, good)
    with pytest.raises(LabelStoreError, match="out of range"):
        w.write_batch(0, 2, good)
    with pytest.raises(LabelStoreError, match="not written yet"):
        w.finalize()
    w.write_batch(0, 1, good)
    w.finalize()
    with LabelFile(path) as f:
        np.testing.assert_array_equal(f[0, 0].logits, fp16(good))
    with pytest.raises(LabelStoreError, match="already exists"):
        LabelWriter(path, num_classes=10, num_images=20, codec="dense16", image_sizes=(8, 8))


def test_reader_errors(label_file, tmp_path):
    path, _ = label_file
    with LabelFile(path) as f:
        with pytest.raises(LabelStoreError, match="epoch 3 is out of range"):
            f[3, 0]
        with pytest.raises(LabelStoreError, match="batch 4 is out of range"):
            f[0, 4]
        with pytest.raises(LabelStoreError, match="image 50 is out of range"):
            f.read_sample(0, 50)
        with pytest.raises(LabelStoreError, match="another image set"):
            f.check_images("sha256:other")
        f.check_images("sha256:test")
    with pytest.raises(LabelStoreError, match="no label file"):
        LabelFile(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(LabelStoreError, match="not a labelstore label file"):
        LabelFile(tmp_path / "text.h5")


def test_unknown_format_version(label_file):
    path, _ = label_file
    with open(path, "r+b") as fh:
        fh.seek(16)
        fh.write(np.uint32(99).tobytes())
    with pytest.raises(LabelStoreError, match="format version 99.*upgrade"):
        LabelFile(path)


def test_corruption_is_always_reported_never_returned(label_file):
    path, written = label_file
    original = path.read_bytes()
    rng = np.random.default_rng(5)
    positions = rng.choice(len(original), size=60, replace=False)
    from labelstore import verify_file

    for pos in positions:
        data = bytearray(original)
        data[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(data))
        assert not verify_file(path).ok, f"flip at byte {pos} not reported by verify"
        try:
            with LabelFile(path) as f:
                for (e, b), (logits, _) in written.items():
                    try:
                        got = f[e, b]
                    except LabelStoreError:
                        continue
                    np.testing.assert_array_equal(got.logits, fp16(logits), err_msg=f"flip at {pos} returned as data")
        except LabelStoreError:
            pass
    for size in (0, 100, 511, 600, len(original) // 2, len(original) - 1):
        path.write_bytes(original[:size])
        with pytest.raises(LabelStoreError):
            LabelFile(path)
        assert not verify_file(path).ok


def _read_in_child(args):
    f, keys = args
    return [(k, f[k].logits.tobytes()) for k in keys]


def test_concurrent_reads_from_processes(label_file):
    path, written = label_file
    f = LabelFile(path)
    f[0, 0]  # the parent's handle is open before the fork: children must not use it
    keys = sorted(written)
    with mp.get_context("fork").Pool(4) as pool:
        results = pool.map(_read_in_child, [(f, keys[i::4]) for i in range(4)] * 2)
    for chunk in results:
        for k, raw in chunk:
            assert raw == fp16(written[k][0]).tobytes()
    clone = pickle.loads(pickle.dumps(f))
    np.testing.assert_array_equal(clone[1, 1].logits, f[1, 1].logits)
    f.close()


# -- shards ------------------------------------------------------------------------------
def test_shards_merge_to_the_single_process_file(tmp_path):
    from labelstore import merge_shards

    def run(path, shard):
        rng = np.random.default_rng(0)
        w = LabelWriter(path, num_classes=10, num_images=50, codec="dense16", seed=7, image_sizes=(32, 32), shard=shard)
        for e in range(2):
            w.begin_epoch(e, 8)
            for b in range(w.num_batches(e)):
                logits = make_logits(rng, len(w.batch_indices(e, b)), 10)
                if w.owns(b):
                    w.write_batch(e, b, logits)
        return w.finalize()

    assert run(tmp_path / "one.h5", None) == tmp_path / "one.h5"
    assert run(tmp_path / "m.h5", (1, 3)) is None
    with pytest.raises(LabelStoreError, match="ranks \\[0, 2\\] are missing"):
        merge_shards(tmp_path / "m.h5")
    with pytest.raises(LabelStoreError, match="world size 3, not 2; resume it with 3 processes"):
        run(tmp_path / "m.h5", (0, 2))  # resumed with another world size: refused before any work
    assert sorted(d.name for d in (tmp_path / "m.h5.shards").iterdir()) == ["rank1of3"]
    run(tmp_path / "m.h5", (0, 3))
    run(tmp_path / "m.h5", (2, 3))
    merge_shards(tmp_path / "m.h5")
    with LabelFile(tmp_path / "one.h5") as a, LabelFile(tmp_path / "m.h5") as b:
        for x, y in zip(a.batches(), b.batches()):
            np.testing.assert_array_equal(x.logits, y.logits)
            np.testing.assert_array_equal(x.boxes, y.boxes)
    assert not (tmp_path / "m.h5.shards").exists()
