"""pack: every field of SRe2L / LPLD / HALD / FKD / arrays sources survives into the label file."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from fixtures_prior_art import write_fkd, write_hald, write_sre2l
from labelstore import LabelFile, LabelStoreError
from labelstore.cli import main as cli_main
from labelstore.importers import coords_to_boxes, detect_layout
from labelstore.pack import pack, parse_size


def check_sre2l(path, truth, stored=None):
    with LabelFile(path) as f:
        for (e, b), t in truth.items():
            if stored is not None and e not in stored:
                continue
            k = stored.index(e) if stored is not None else e
            bt = f[k, b]
            np.testing.assert_array_equal(bt.indices, t["ids"])
            np.testing.assert_array_equal(bt.logits, t["logits"])
            np.testing.assert_array_equal(bt.boxes, t["boxes"])  # the exact (i, j, h, w) RandomResizedCrop drew
            np.testing.assert_array_equal(bt.flips, t["flips"])
            if t["mix_index"] is None:
                assert bt.mix is None
            else:
                np.testing.assert_array_equal(bt.mix.partner, t["mix_index"])
                assert bt.mix.lam == pytest.approx(t["lam"], rel=1e-6)
                # SRe2L's (bbx1, bby1, bbx2, bby2) are (rows, cols, rows, cols) = labelstore's (y0, x0, y1, x1)
                np.testing.assert_array_equal(bt.mix.box, np.array(t["bbox"]))


def test_sre2l_every_field(tmp_path):
    truth = write_sre2l(tmp_path / "src", num_images=40, epochs=3, batch_size=16)
    assert detect_layout(tmp_path / "src") == "sre2l"
    res = pack(tmp_path / "src", tmp_path / "l.h5", progress=False)
    assert (res.records, res.stored_epochs, res.layout) == (120, 3, "sre2l")
    check_sre2l(tmp_path / "l.h5", truth)
    with LabelFile(tmp_path / "l.h5") as f:
        assert (f.crops_mode, f.orders_mode, f.mix_mode, f.source) == ("explicit", "explicit", "explicit", "logits")
        assert f.user_attrs["source_layout"] == "sre2l" and "seeded 42" in f.user_attrs["order_source"]
        assert f.num_batches(0) == 3 and len(f[0, 2]) == 8


def test_lpld_orders_from_json_and_mixup(tmp_path):
    truth = write_sre2l(tmp_path / "src", num_images=30, epochs=2, batch_size=8, lpld_orders=True, mix="mixup")
    assert detect_layout(tmp_path / "src") == "lpld"
    pack(tmp_path / "src", tmp_path / "l.h5", progress=False)
    with LabelFile(tmp_path / "l.h5") as f:
        assert f[0, 0].mix.kind == "mixup" and "LPLD" in f.user_attrs["order_source"]
        for (e, b), t in truth.items():
            np.testing.assert_array_equal(f[e, b].indices, t["ids"])
            np.testing.assert_array_equal(f[e, b].logits, t["logits"])
            assert f[e, b].mix.lam == pytest.approx(t["lam"], rel=1e-6)


def test_no_mix_and_identity_order_flag(tmp_path):
    write_sre2l(tmp_path / "src", num_images=20, epochs=1, batch_size=10, mix="none")
    res = pack(tmp_path / "src", tmp_path / "l.h5", progress=False, order="identity", num_images=20)
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.mix_mode == "none" and f[0, 0].mix is None
        np.testing.assert_array_equal(f.order(0), np.arange(20))
    assert any("identity" in n for n in res.notes)


def test_coords_formula_matches_pil_rounding():
    # PIL crops at round(j*W), round(i*H), round(j*W + w*W), round(i*H + h*H), half to even
    coords = np.array([[0.5 / 7, 2.5 / 10, 3 / 7, 5 / 10]], np.float32)
    top, left, h, w = coords_to_boxes(coords, np.array([[7, 10]]))[0]
    i, j, hh, ww = (float(c) * s for c, s in zip(coords[0], (7, 10, 7, 10)))
    assert (top, left, top + h, left + w) == (round(i), round(j), round(i + hh), round(j + ww))


def test_hald_probabilities(tmp_path):
    truth = write_hald(tmp_path / "src", num_images=40, epochs=2, batch_size=16, image_size=(32, 32))
    assert detect_layout(tmp_path / "src") == "hald"
    pack(tmp_path / "src", tmp_path / "l.h5", progress=False, image_size=(32, 32))
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.source == "probabilities" and f.source_temperature == 20
        for (e, b), t in truth.items():
            bt = f[e, b]
            np.testing.assert_array_equal(bt.indices, t["ids"])
            np.testing.assert_allclose(bt.probs(20.0), t["probs"], atol=2e-6, rtol=2e-3)  # fp16 storage of T*log p
            np.testing.assert_array_equal(bt.boxes, coords_to_boxes(t["coords"], np.full((len(t["ids"]), 2), 32)))
            np.testing.assert_array_equal(bt.flips, t["flips"])
            np.testing.assert_array_equal(bt.mix.partner, t["mix_index"])


def test_hald_without_order_file_recreates_randperm(tmp_path):
    truth = write_hald(tmp_path / "src", num_images=20, epochs=2, batch_size=8, save_orders=False)
    pack(tmp_path / "src", tmp_path / "l.h5", progress=False, image_size="32x32" and (32, 32))
    with LabelFile(tmp_path / "l.h5") as f:
        for (e, b), t in truth.items():
            np.testing.assert_array_equal(f[e, b].indices, t["ids"])


def test_fkd_marginal_smoothing(tmp_path):
    truth = write_fkd(tmp_path / "src", classes=4, per_class=3, num_crops=5, k=3, image_size=(64, 48))
    assert detect_layout(tmp_path / "src") == "fkd"
    with pytest.raises(LabelStoreError, match="--image-size"):
        pack(tmp_path / "src", tmp_path / "x.h5", progress=False)
    pack(tmp_path / "src", tmp_path / "l.h5", progress=False, image_size=(64, 48), batch_size=5)
    with LabelFile(tmp_path / "l.h5") as f:
        assert (f.num_epochs, f.num_images, f.num_classes, f.source_temperature) == (5, 12, 4, 1.0)
        for img in range(12):
            idx, p = truth["probs"][img]
            for e in range(5):
                s = f.read_sample(e, img)
                probs = s.probs(1.0)[0]
                np.testing.assert_allclose(probs[idx[e]], p[e], rtol=2e-3, atol=1e-6)
                rest = np.setdiff1d(np.arange(4), idx[e])
                np.testing.assert_allclose(probs[rest], (1 - p[e].sum()) / len(rest), rtol=2e-2, atol=1e-6)
                np.testing.assert_array_equal(s.boxes[0], truth["boxes"][img][e])
                assert s.flips[0] == truth["flips"][img][e]


def test_arrays_npz_and_h5(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 30, 12)).astype(np.float32)
    order = np.stack([rng.permutation(30) for _ in range(2)])
    boxes = np.tile(np.array([1, 2, 10, 12]), (2, 30, 1))
    np.savez(tmp_path / "a.npz", logits=logits, order=order, boxes=boxes, flips=np.ones((2, 30), bool), batch_size=7)
    pack(tmp_path / "a.npz", tmp_path / "a.h5", progress=False, image_size=(32, 32))
    import h5py

    with h5py.File(tmp_path / "b.hdf5", "w") as h:
        h["probs"] = torch.softmax(torch.from_numpy(logits[0]) / 4, 1).numpy()
        h["temperature"] = 4.0
    pack(tmp_path / "b.hdf5", tmp_path / "b.h5", progress=False, image_size=(16, 16), batch_size=8)
    with LabelFile(tmp_path / "a.h5") as f, LabelFile(tmp_path / "b.h5") as g:
        assert f.batch_size(0) == 7
        np.testing.assert_array_equal(f[1, 2].indices, order[1, 14:21])
        np.testing.assert_allclose(f[1, 2].logits, logits[1, 14:21], atol=1e-2)
        np.testing.assert_array_equal(f[0, 0].boxes[0], [1, 2, 10, 12])
        assert g.source == "probabilities" and g.crops_mode == "derived"
        np.testing.assert_array_equal(g[0, 1].boxes[0], [0, 0, 16, 16])
        np.testing.assert_allclose(g[0, 1].probs(1.0), torch.softmax(torch.from_numpy(logits[0, 8:16]), 1).numpy(), atol=2e-3)


# -- bad input ------------------------------------------------------------------------------
def test_unknown_and_mixed_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelStoreError, match="cannot tell the layout"):
        pack(tmp_path / "empty", tmp_path / "x.h5", progress=False)
    write_sre2l(tmp_path / "m", num_images=10, epochs=1, batch_size=5)
    torch.save([], tmp_path / "m" / "epoch_3.tar")
    with pytest.raises(LabelStoreError, match="mixes layouts"):
        pack(tmp_path / "m", tmp_path / "x.h5", progress=False)


def test_missing_batch_and_epoch(tmp_path):
    write_sre2l(tmp_path / "s", num_images=20, epochs=3, batch_size=8)
    os.remove(tmp_path / "s" / "epoch_1" / "batch_1.tar")
    with pytest.raises(LabelStoreError, match=r"epoch_1.*batch files missing \(1\)"):
        pack(tmp_path / "s", tmp_path / "x.h5", progress=False)
    res = pack(tmp_path / "s", tmp_path / "x.h5", progress=False, skip_bad=True)
    # the missing batch is left out, not its epoch, and the image count stays 20
    assert res.source_epochs == [0, 1, 2] and res.stored_epochs == 3 and res.records == 60 - 8 and res.skipped
    with LabelFile(tmp_path / "x.h5") as f:
        assert f.num_images == 20 and f.stored_batches(1).tolist() == [0, 2] and f.is_complete(0) and f.is_complete(2)
    shutil.rmtree(tmp_path / "s" / "epoch_1")
    with pytest.raises(LabelStoreError, match=r"epoch folders missing: epoch_1"):
        pack(tmp_path / "s", tmp_path / "y.h5", progress=False)
    res = pack(tmp_path / "s", tmp_path / "y.h5", progress=False, skip_bad=True)
    assert res.source_epochs == [0, 2] and res.stored_epochs == 2
    with LabelFile(tmp_path / "y.h5") as f:
        assert f.user_attrs["source_epochs"] == [0, 2]


def test_inconsistent_classes_and_batch_sizes(tmp_path):
    write_sre2l(tmp_path / "s", num_images=20, epochs=2, batch_size=8)
    bad = tmp_path / "s" / "epoch_1" / "batch_0.tar"
    obj = torch.load(bad, weights_only=False)
    obj[5] = torch.zeros(8, 11).half()
    torch.save(obj, bad)
    with pytest.raises(LabelStoreError, match=r"epoch_1/batch_0.tar: has 11 classes"):
        pack(tmp_path / "s", tmp_path / "x.h5", progress=False)
    obj[5] = torch.zeros(7, 10).half()
    torch.save(obj, bad)
    with pytest.raises(LabelStoreError, match=r"epoch_1/batch_0.tar: holds 7 records, expected 8"):
        pack(tmp_path / "s", tmp_path / "y.h5", progress=False)


def test_unreadable_pickle_and_skip_bad(tmp_path):
    write_sre2l(tmp_path / "s", num_images=20, epochs=3, batch_size=8)
    (tmp_path / "s" / "epoch_2" / "batch_2.tar").write_bytes(b"not a pickle at all")
    with pytest.raises(LabelStoreError, match=r"epoch_2/batch_2.tar: not a readable torch.save file"):
        pack(tmp_path / "s", tmp_path / "x.h5", progress=False)
    res = pack(tmp_path / "s", tmp_path / "y.h5", progress=False, skip_bad=True)
    assert res.source_epochs == [0, 1, 2] and "batch_2.tar" in res.skipped[0] and res.records == 60 - 4
    with LabelFile(tmp_path / "y.h5") as f:
        assert f.stored_batches(2).tolist() == [0, 1] and f.num_images == 20


def test_refuses_files_outside_the_tree(tmp_path):
    write_sre2l(tmp_path / "s", num_images=20, epochs=2, batch_size=8)
    write_sre2l(tmp_path / "elsewhere", num_images=20, epochs=1, batch_size=8)
    link = tmp_path / "s" / "epoch_1" / "batch_0.tar"
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere" / "epoch_0" / "batch_0.tar")
    with pytest.raises(LabelStoreError, match="outside the source directory"):
        pack(tmp_path / "s", tmp_path / "x.h5", progress=False)


def test_code_in_pickle_is_refused(tmp_path):
    write_sre2l(tmp_path / "s", num_images=10, epochs=1, batch_size=5)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save([Evil()] * 6, tmp_path / "s" / "epoch_0" / "batch_1.tar")
    with pytest.raises(LabelStoreError, match="--trust-pickles"):
        pack(tmp_path / "s", tmp_path / "x.h5", progress=False)
    assert not (tmp_path / "pwned").exists()


def test_resume_after_failure_gives_the_same_file(tmp_path):
    truth = write_sre2l(tmp_path / "s", num_images=40, epochs=3, batch_size=16)
    pack(tmp_path / "s", tmp_path / "ref.h5", progress=False)
    good = (tmp_path / "s" / "epoch_2" / "batch_1.tar").read_bytes()
    (tmp_path / "s" / "epoch_2" / "batch_1.tar").write_bytes(b"\0" * 10)
    with pytest.raises(LabelStoreError, match="batch_1.tar"):  # the sample (one batch) comes from epoch 0
        pack(tmp_path / "s", tmp_path / "l.h5", progress=False, sample_records=16)
    assert (tmp_path / "l.h5.partial").exists() and not (tmp_path / "l.h5").exists()
    (tmp_path / "s" / "epoch_2" / "batch_1.tar").write_bytes(good)
    res = pack(tmp_path / "s", tmp_path / "l.h5", progress=False)
    assert res.resumed_batches == 7  # epochs 0, 1 and batch 0 of epoch 2
    check_sre2l(tmp_path / "l.h5", truth)
    with LabelFile(tmp_path / "ref.h5") as a, LabelFile(tmp_path / "l.h5") as b:
        for e in range(3):
            for k in range(3):
                assert a.read_chunk_bytes(e, k)[1] == b.read_chunk_bytes(e, k)[1]


def test_parse_size():
    assert parse_size("285MB") == 285_000_000 and parse_size("1.5 GB") == 1_500_000_000 and parse_size("2KiB") == 2048
    with pytest.raises(LabelStoreError):
        parse_size("lots")


def test_cli_pack(tmp_path, capsys):
    write_sre2l(tmp_path / "s", num_images=20, epochs=2, batch_size=8)
    assert cli_main(["pack", str(tmp_path / "s"), str(tmp_path / "l.h5"), "--codec", "dense_q:bits=8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "packed sre2l" in out and "40 records" in out and "dense_q" in out
    assert cli_main(["pack", str(tmp_path / "nope"), str(tmp_path / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
