"""pack on real layouts that are not whole: LPLD's pruned label pools (a partial last epoch),
missing or unreadable batches, image counts the files cannot prove, and the orders."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from fixtures_prior_art import write_hald, write_lpld, write_sre2l
from labelstore import LabelFile, LabelStoreError, verify_file
from labelstore.cli import main as cli_main
from labelstore.pack import pack


def quiet(**kw):
    return dict(progress=False, log=lambda m: None, **kw)


@pytest.mark.parametrize("r, stored", [(0.0, {0: 5, 1: 5, 2: 5}), (0.5, {0: 5, 1: 2}), (0.9, {0: 1})])
def test_lpld_pruned_pools_store_exactly_the_kept_batches(tmp_path, r, stored):
    truth = write_lpld(tmp_path / "src", r=r, num_images=40, epochs=3, batch_size=8)
    res = pack(tmp_path / "src", tmp_path / "l.h5", image_size=(32, 32), **quiet())  # no --skip-bad: a pool is valid input
    assert not res.skipped and res.records == sum(len(t["ids"]) for t in truth.values())
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.num_images == 40 and f.num_epochs == len(stored)
        assert {e: len(f.stored_batches(e)) for e in range(f.num_epochs)} == stored
        assert len(f) == len(truth) and f.num_records == res.records
        for (e, b), t in truth.items():
            bt = f[e, b]
            np.testing.assert_array_equal(bt.indices, t["ids"])
            np.testing.assert_array_equal(bt.logits, t["logits"])
            np.testing.assert_array_equal(bt.boxes, t["boxes"])
        if r > 0:
            last = f.num_epochs - 1
            assert not f.is_complete(last) and not f.complete
            with pytest.raises(LabelStoreError, match="is not stored: epoch .* is partial"):
                f.read_batch(last, stored[last])
        assert [(b.epoch, b.batch) for b in f.batches()] == sorted(truth)
    assert verify_file(tmp_path / "l.h5").ok


def test_inspect_shows_a_partial_epoch(tmp_path, capsys):
    write_lpld(tmp_path / "src", r=0.5, num_images=40, epochs=3, batch_size=8)
    pack(tmp_path / "src", tmp_path / "l.h5", **quiet())
    assert cli_main(["inspect", str(tmp_path / "l.h5")]) == 0
    out = capsys.readouterr().out
    assert "epoch 1 is partial: batches 0..1 of 0..4 stored" in out and "records    56" in out
    assert cli_main(["inspect", "--json", str(tmp_path / "l.h5")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["partial_epochs"] == {"1": {"stored_batches": "0..1", "of": 5}} and info["records"] == 56


def test_replay_pools_draw_from_exactly_the_stored_batches(tmp_path):
    from loaders import ReplayLoader, TorchBackend

    write_lpld(tmp_path / "src", r=0.5, num_images=40, epochs=3, batch_size=8)
    pack(tmp_path / "src", tmp_path / "l.h5", image_size=(32, 32), **quiet())
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    backend = TorchBackend(images, np.arange(40) % 10)
    with LabelFile(tmp_path / "l.h5") as f:
        stored = {tuple(map(int, row)) for row in f.stored_batches()}
    with pytest.raises(LabelStoreError, match="partial .* pool="):
        ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=2)
    for pool in ("replacement", "without_replacement"):
        loader = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=8, pool=pool)
        seen = {it.stored for e in range(8) for it in loader.plan(e)}
        assert seen <= stored and len(seen) == len(stored) if pool == "without_replacement" else seen <= stored
    with pytest.raises(LabelStoreError, match="cycle"):
        ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=4, pool="cycle").plan(1)
    step = next(iter(ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=8, pool="replacement")))
    assert step.stored in stored and len(step) == 8


def test_lpld_pool_without_its_order_file_is_refused(tmp_path):
    write_lpld(tmp_path / "src", r=0.5, num_images=40, epochs=3, batch_size=8)
    shutil.move(tmp_path / "src" / "sampler_indices_epoch.json", tmp_path / "orders.json")
    with pytest.raises(LabelStoreError, match="cannot tell how many images|cannot be re-created"):
        pack(tmp_path / "src", tmp_path / "x.h5", **quiet())
    with pytest.raises(LabelStoreError, match="LPLD's orders cannot be re-created"):
        pack(tmp_path / "src", tmp_path / "x.h5", num_images=40, **quiet())
    res = pack(tmp_path / "src", tmp_path / "x.h5", order_from=tmp_path / "orders.json", **quiet())
    assert "orders.json" in json.dumps(res.notes) and not (tmp_path / "x.h5.partial").exists()
    res = pack(tmp_path / "src", tmp_path / "y.h5", num_images=40, order="sre2l-seed42", **quiet())
    assert any("RandomSampler" in n for n in res.notes)  # named explicitly: used, and said so


def test_last_batch_missing_everywhere_never_shrinks_the_image_set(tmp_path):
    write_sre2l(tmp_path / "s", num_images=40, epochs=2, batch_size=8)  # 5 full batches per epoch
    for e in range(2):
        os.remove(tmp_path / "s" / f"epoch_{e}" / "batch_4.tar")
    for kw in ({}, {"skip_bad": True}, {"skip_bad": True, "order": "identity"}):
        with pytest.raises(LabelStoreError, match="cannot tell how many images"):
            pack(tmp_path / "s", tmp_path / "x.h5", **quiet(**kw))
    with pytest.raises(LabelStoreError, match=r"batch files missing \(4\)"):
        pack(tmp_path / "s", tmp_path / "x.h5", num_images=40, **quiet())
    res = pack(tmp_path / "s", tmp_path / "x.h5", num_images=40, skip_bad=True, **quiet())
    assert res.records == 64 and len(res.skipped) == 2
    with LabelFile(tmp_path / "x.h5") as f:
        assert f.num_images == 40 and f.num_records == 64 and [f.stored_batches(e).tolist() for e in (0, 1)] == [[0, 1, 2, 3]] * 2
    with pytest.raises(LabelStoreError, match="lies beyond 24 images"):
        pack(tmp_path / "s", tmp_path / "z.h5", num_images=24, **quiet())


def test_images_give_the_count_sizes_and_fingerprint(tmp_path):
    from labelstore import image_set_fingerprint

    write_sre2l(tmp_path / "s", num_images=40, epochs=1, batch_size=8, image_size=(32, 32))
    images = np.random.default_rng(1).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", images=images)
    res = pack(tmp_path / "s", tmp_path / "l.h5", images=tmp_path / "images.npz", **quiet())
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.image_fingerprint == image_set_fingerprint(images) and (f.image_sizes == 32).all()
    assert any("40 images in images.npz" in n for n in res.notes)
    np.savez(tmp_path / "other.npz", images=images[:32])
    with pytest.raises(LabelStoreError, match="lies beyond 32 images"):
        pack(tmp_path / "s", tmp_path / "m.h5", images=tmp_path / "other.npz", **quiet())
    np.savez(tmp_path / "float.npz", images=images.astype(np.float64))
    with pytest.raises(LabelStoreError, match=r"\(40, 32, 32, 3\) float64.*uint8"):
        pack(tmp_path / "s", tmp_path / "m.h5", images=tmp_path / "float.npz", **quiet())


def test_a_bad_first_file_is_skipped_like_any_other(tmp_path):
    truth = write_sre2l(tmp_path / "s", num_images=40, epochs=2, batch_size=16)
    (tmp_path / "s" / "epoch_0" / "batch_0.tar").write_bytes(b"garbage")
    with pytest.raises(LabelStoreError, match="batch_0.tar: not a readable torch.save file"):
        pack(tmp_path / "s", tmp_path / "x.h5", **quiet())
    res = pack(tmp_path / "s", tmp_path / "x.h5", skip_bad=True, **quiet())
    assert res.records == 80 - 16 and any("batch_0.tar" in s for s in res.skipped)
    with LabelFile(tmp_path / "x.h5") as f:
        assert f.stored_batches(0).tolist() == [1, 2] and f.is_complete(1) and f.batch_size(0) == 16
        np.testing.assert_array_equal(f[0, 1].logits, truth[(0, 1)]["logits"])

    write_hald(tmp_path / "h", num_images=40, epochs=3, batch_size=16)
    (tmp_path / "h" / "epoch_0.tar").write_bytes(b"garbage")
    with pytest.raises(LabelStoreError, match="epoch_0.tar"):
        pack(tmp_path / "h", tmp_path / "h.h5", image_size=(32, 32), **quiet())
    res = pack(tmp_path / "h", tmp_path / "h.h5", image_size=(32, 32), skip_bad=True, **quiet())
    assert res.source_epochs == [1, 2] and res.records == 80


def test_hald_probabilities_come_back_as_stored(tmp_path):
    truth = write_hald(tmp_path / "h", num_images=40, epochs=2, batch_size=16, num_classes=100)
    pack(tmp_path / "h", tmp_path / "h.h5", image_size=(32, 32), **quiet())
    exact = total = 0
    with LabelFile(tmp_path / "h.h5") as f:
        for (e, b), t in truth.items():
            got = torch.from_numpy(f[e, b].probs(20.0)).half().float().numpy()
            exact += (got == t["probs"]).sum()
            total += got.size
            # the rest is the renormalisation of rows whose fp16 probabilities do not sum to 1
            np.testing.assert_allclose(got, t["probs"], rtol=2e-3, atol=0)
    assert exact / total > 0.995


@pytest.mark.parametrize("codec", ["dense16", "topk:k=3", "dense_q:bits=4", "lowrank"])
@pytest.mark.parametrize("n, classes", [(40, 10), (300, 100)])
def test_budget_prediction_within_2_percent_with_the_codec_asked_for(tmp_path, codec, n, classes):
    write_sre2l(tmp_path / "s", num_images=n, epochs=3, batch_size=16, num_classes=classes)
    res = pack(tmp_path / "s", tmp_path / "l.h5", budget="1GB", codec=codec, **quiet())
    chosen = res.plan.chosen
    assert {c.codec_spec for c in res.plan.configs} == {codec} and res.codec["id"] == codec.split(":")[0]
    assert abs(res.file_bytes - chosen.predicted_bytes) <= 0.02 * chosen.predicted_bytes
    # a budget just above the prediction packs (the prediction is not an under-estimate)
    pack(tmp_path / "s", tmp_path / "m.h5", budget=chosen.predicted_bytes + 1, codec=codec, **quiet())


def test_budget_with_a_mistyped_codec_is_refused(tmp_path):
    write_sre2l(tmp_path / "s", num_images=40, epochs=1, batch_size=16)
    with pytest.raises(LabelStoreError, match="topq"):
        pack(tmp_path / "s", tmp_path / "l.h5", budget="1MB", codec="topq:k=3", **quiet())
    assert not (tmp_path / "l.h5").exists()


def test_export_warns_when_stock_sre2l_would_pair_the_wrong_images(tmp_path, capsys):
    write_lpld(tmp_path / "lpld", r=0.0, num_images=40, epochs=2, batch_size=8)
    pack(tmp_path / "lpld", tmp_path / "lpld.h5", image_size=(32, 32), **quiet())
    assert cli_main(["export", str(tmp_path / "lpld.h5"), "--to", "sre2l", str(tmp_path / "out"), "--strict", "--quiet"]) == 2
    assert "wrong images" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert cli_main(["export", str(tmp_path / "lpld.h5"), "--to", "sre2l", str(tmp_path / "out"), "--quiet"]) == 0
    assert "warning:" in capsys.readouterr().err
    orders = json.loads((tmp_path / "out" / "sampler_indices_epoch.json").read_text())
    with LabelFile(tmp_path / "lpld.h5") as f:
        assert orders["1"] == f.order(1).tolist()
    write_sre2l(tmp_path / "sre2l", num_images=40, epochs=2, batch_size=16)  # SRe2L's own orders: no warning
    pack(tmp_path / "sre2l", tmp_path / "s.h5", image_size=(32, 32), **quiet())
    assert cli_main(["export", str(tmp_path / "s.h5"), "--to", "sre2l", str(tmp_path / "out2"), "--strict", "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_partial_epoch_survives_export_and_repack(tmp_path):
    truth = write_lpld(tmp_path / "src", r=0.5, num_images=40, epochs=3, batch_size=8)
    pack(tmp_path / "src", tmp_path / "a.h5", image_size=(32, 32), **quiet())
    from labelstore.export import export_sre2l

    export_sre2l(tmp_path / "a.h5", tmp_path / "out", progress=False, log=lambda m: None)
    assert sorted(p.name for p in (tmp_path / "out" / "epoch_1").iterdir()) == ["batch_0.tar", "batch_1.tar"]
    pack(tmp_path / "out", tmp_path / "b.h5", image_size=(32, 32), **quiet())
    with LabelFile(tmp_path / "b.h5") as f:
        for (e, b), t in truth.items():
            np.testing.assert_array_equal(f[e, b].logits, t["logits"])
            np.testing.assert_array_equal(f[e, b].indices, t["ids"])
