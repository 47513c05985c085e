"""distill relabel -> train -> demo on real Fashion-MNIST images with tiny real teachers."""

import csv
import json

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.data import ImageDataset, fashion_mnist, save_npz
from distill.models import load_checkpoint
from distill.relabel import RelabelConfig, relabel
from distill.squeeze import SqueezeConfig, squeeze
from distill.train import TrainConfig, train
from labelstore import LabelFile
from labelstore.errors import LabelStoreError
from loaders import ReplayLoader, TorchBackend


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two narrow ConvNets squeezed for 15 steps on 1k real images."""
    out = tmp_path_factory.mktemp("teachers")
    cfg = SqueezeConfig(out_dir=str(out), models=["convnet-w16", "convnet-w16"], epochs=1, batch_size=64,
                        max_steps=15, train_subset=1000, test_subset=200, threads=2)
    return [str(p) for p in squeeze(cfg, progress=False)]


def _images(path, n_per_class=2, seed=0, num_classes=10):
    ds = fashion_mnist("train").subset(10 * n_per_class, seed=seed)
    keep = ds.labels < num_classes
    return save_npz(path, ImageDataset(ds.images[keep], ds.labels[keep], num_classes, "fmnist-small"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return str(_images(tmp_path_factory.mktemp("images") / "images.npz"))


@pytest.fixture(scope="module")
def labels(teachers, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels") / "labels.h5"
    cfg = RelabelConfig(images=images, teachers=[teachers[0]], out=str(out), epochs=3, batch_size=10, threads=2)
    return relabel(cfg, progress=False)


def test_relabel_file_fingerprint_epochs_codec_and_drift(labels, images, capsys):
    ds = np.load(images)
    with LabelFile(labels["labels"]) as f:
        assert f.num_epochs == 3 and f.num_images == 20 and f.num_classes == 10
        assert f.codec.get_config()["id"] == "dense16"
        assert f.image_fingerprint == TorchBackend(ds["images"]).fingerprint
        assert f.crop_policy.size == (28, 28) and f.mix_policy.kind == "cutmix"
        assert f.user_attrs["relabel"]["gray"] is True
    assert 0.0 <= labels["mismatch"] <= 1.0 and labels["drift_png"].exists()
    cfgjson = json.loads(labels["labels"].with_name("labels.config.json").read_text())
    assert cfgjson["stage"] == "relabel" and cfgjson["stored_epochs"] == 3


def test_relabel_prints_drift_and_reuses_a_finished_file(teachers, images, labels, capsys):
    cfg = RelabelConfig(images=images, teachers=[teachers[0]], out=str(labels["labels"]), epochs=3, batch_size=10)
    again = relabel(cfg, progress=False)
    out = capsys.readouterr().out
    assert again["reused"] and "top-1 != class" in out and "spread Tr(Cov)" in out


def test_stored_logits_are_the_teachers_on_the_replayed_pixels(teachers, images, labels):
    """Exact replay: the teacher run on the student's soft-step pixels gives the stored logits."""
    model, meta = load_checkpoint(teachers[0])
    ds = np.load(images)
    loader = ReplayLoader(labels["labels"], TorchBackend(ds["images"], ds["labels"]), "soft", epochs=3,
                          mean=meta["mean"], std=meta["std"], gray=True)
    for step in loader:
        with torch.no_grad():
            z = model(step.images)
        assert torch.allclose(z, step.logits, atol=0.02 * float(z.abs().max()))  # fp16 storage


def test_committee_is_the_weighted_sum_and_batch_bn_leaves_teachers_alone(teachers, images, tmp_path):
    out = tmp_path / "committee.h5"
    res = relabel(RelabelConfig(images=images, teachers=teachers, out=str(out), epochs=1, batch_size=10,
                                priors=[80.0, 60.0], temperature=10.0, bn="batch", mix="none"), progress=False)
    w = torch.softmax(torch.tensor([8.0, 6.0]), 0)
    models = [load_checkpoint(t)[0] for t in teachers]
    ds = np.load(images)
    meta = load_checkpoint(teachers[0])[1]
    loader = ReplayLoader(out, TorchBackend(ds["images"], ds["labels"]), "soft", epochs=1,
                          mean=meta["mean"], std=meta["std"], gray=True)
    for step in loader:
        zs = []
        for m in models:
            m.train()  # batch statistics, as relabel --bn batch uses them
            with torch.no_grad():
                zs.append(m(step.images))
        want = w[0] * zs[0] + w[1] * zs[1]
        assert torch.allclose(want, step.logits, atol=0.02 * float(want.abs().max()))
    with LabelFile(out) as f:
        assert f.teacher["bn"] == "batch" and f.teacher["weights"] == pytest.approx(w.tolist(), abs=1e-5)
    assert res["stored_epochs"] == 1
    # batch-specific BN never touches the teacher's running statistics
    from distill.committee import batch_specific_bn

    model = load_checkpoint(teachers[0])[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    copy = batch_specific_bn(model)
    with torch.no_grad():
        copy(torch.randn(8, 1, 28, 28) * 3 + 1)
    for k, v in copy.state_dict().items():
        if "num_batches_tracked" not in k:
            torch.testing.assert_close(v, before[k])
    assert not model.training


def test_budget_picks_a_file_that_fits_and_says_so(teachers, images, tmp_path, capsys):
    # 20 KB: the label file header also holds the data record (class names, shape) since issue 10
    out = tmp_path / "b.h5"
    res = relabel(RelabelConfig(images=images, teachers=[teachers[0]], out=str(out), epochs=30, batch_size=10,
                                budget="20KB"), progress=False)
    said = capsys.readouterr().out
    assert "budget 20,000 B ->" in said and "epochs stored" in said
    assert out.stat().st_size <= 20_000 and 1 <= res["stored_epochs"] <= 30
    with LabelFile(out) as f:
        assert f.num_epochs == res["stored_epochs"]


def test_budget_too_small_leaves_nothing(teachers, images, tmp_path):
    out = tmp_path / "tiny.h5"
    with pytest.raises(LabelStoreError, match="too small for even one stored epoch"):
        relabel(RelabelConfig(images=images, teachers=[teachers[0]], out=str(out), epochs=5, batch_size=10,
                              budget="2KB"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_relabel_resumes_after_a_kill(teachers, images, labels, tmp_path, monkeypatch):
    import distill.committee as R

    out = tmp_path / "resumed.h5"
    cfg = RelabelConfig(images=images, teachers=[teachers[0]], out=str(out), epochs=3, batch_size=10)
    calls = {"n": 0}
    forward = R.Committee.forward

    def dying(self, x):  # the process "dies" after 3 batches
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return forward(self, x)

    monkeypatch.setattr(R.Committee, "forward", dying)
    with pytest.raises(KeyboardInterrupt):
        relabel(cfg, progress=False)
    assert not out.exists() and out.with_name("resumed.h5.partial").is_dir()
    monkeypatch.setattr(R.Committee, "forward", forward)
    relabel(cfg, progress=False)
    with LabelFile(out) as a, LabelFile(labels["labels"]) as b:
        for e in range(3):
            for bt in range(2):
                np.testing.assert_array_equal(a.read_logits(e, bt), b.read_logits(e, bt))


def test_refuses_labels_for_other_images_and_wrong_class_count(teachers, images, labels, tmp_path):
    other = str(_images(tmp_path / "other.npz", seed=5))
    with pytest.raises(LabelStoreError, match="another image set"):
        relabel(RelabelConfig(images=other, teachers=[teachers[0]], out=str(labels["labels"]), epochs=3,
                              batch_size=10), progress=False)
    with pytest.raises(LabelStoreError, match="another image set"):
        train(TrainConfig(images=other, labels=str(labels["labels"]), out_dir=str(tmp_path / "s"), model="convnet-w16",
                          schedule="soft", epochs=3, test_data=None), progress=False)
    five = str(_images(tmp_path / "five.npz", n_per_class=4, num_classes=5))
    with pytest.raises(LabelStoreError, match="teacher has 10 classes"):
        relabel(RelabelConfig(images=five, teachers=[teachers[0]], out=str(tmp_path / "x.h5"), epochs=1,
                              batch_size=10), progress=False)
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.partial").exists()
    # the CLI turns it into one line and exit status 2
    assert main(["relabel", "--images", five, "--teachers", teachers[0], "--out", str(tmp_path / "y.h5"),
                 "--epochs", "1", "--quiet"]) == 2


def _train(images, labels, out, schedule, epochs=4, **kw):
    cfg = TrainConfig(images=images, labels=str(labels), out_dir=str(out), model="convnet-w16", schedule=schedule,
                      epochs=epochs, test_subset=200, threads=2, **kw)
    return train(cfg, progress=False)


def test_train_hald_and_soft_write_metrics_checkpoint_and_config(images, labels, tmp_path):
    hald = _train(images, labels["labels"], tmp_path / "hald", "hald")
    rows = list(csv.DictReader(open(hald["metrics"])))
    assert [r["kind"] for r in rows] == ["soft", "hard", "hard", "soft"]
    assert 0.0 <= float(rows[-1]["test_acc"]) <= 1.0 and hald["test_acc"] == pytest.approx(float(rows[-1]["test_acc"]))
    model, meta = load_checkpoint(hald["checkpoint"])
    assert meta["schedule"] == "hald:hard=0.5" and meta["in_channels"] == 1 and meta["image_size"] == 28
    rec = json.loads((tmp_path / "hald" / "student.config.json").read_text())
    assert rec["stage"] == "train" and rec["config"]["temperature"] == 4.0 and rec["config"]["lr"] == 1e-3
    soft = _train(images, labels["labels"], tmp_path / "soft", "soft|drift")
    rows = list(csv.DictReader(open(soft["metrics"])))
    assert {r["kind"] for r in rows} == {"soft"} and all(0 <= float(r["drift_gated"]) <= 1 for r in rows)


def test_train_resume_equals_an_uninterrupted_run(images, labels, tmp_path):
    full = _train(images, labels["labels"], tmp_path / "full", "hald")
    part = _train(images, labels["labels"], tmp_path / "part", "hald", stop_after=2)
    assert part["checkpoint"] is None and part["last"].exists()
    with pytest.raises(LabelStoreError, match="other settings"):
        _train(images, labels["labels"], tmp_path / "part", "soft", resume=True)
    done = _train(images, labels["labels"], tmp_path / "part", "hald", resume=True)
    a = torch.load(full["checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(done["checkpoint"], weights_only=True)["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert len(list(csv.DictReader(open(done["metrics"])))) == 4


def test_demo_reuses_what_is_built(tmp_path, capsys):
    from distill.demo import DemoConfig, demo

    cfg = DemoConfig(out_dir=str(tmp_path / "demo"), teacher_model="convnet-w16", teacher_subset=500, teacher_epochs=1,
                     budget="20KB", student_model="convnet-w16", student_epochs=3, schedules=["soft", "hald"],
                     test_subset=200)
    first = demo(cfg, progress=False)
    got = [(r["labels"], r["schedule"]) for r in first["rows"]]
    assert got == [("sre2l", "soft"), ("full", "soft"), ("full", "hald"), ("budget", "soft"), ("few", "soft"),
                   ("few", "hald")] and not any(r["cached"] for r in first["rows"])
    sre2l, full = first["rows"][0], first["rows"][1]
    # SRe2L's layout holds the same logits: the same student, at the bytes its files take
    assert sre2l["test_acc"] == full["test_acc"] and sre2l["label_bytes"] > full["label_bytes"]
    assert sre2l["files"] == 3 * 5 and first["labels"]["budget"]["bytes"] <= 20_000  # 3 epochs of 5 batches
    assert first["labels"]["few"]["stored_epochs"] == 1
    assert (tmp_path / "demo" / "results.png").exists() and (tmp_path / "demo" / "results.csv").exists()
    capsys.readouterr()
    again = demo(cfg, progress=False)
    assert again["times"] == {"teacher": "cached", "images": "cached", "relabel": "cached"}
    assert all(r["cached"] for r in again["rows"])
    assert [r["test_acc"] for r in again["rows"]] == [r["test_acc"] for r in first["rows"]]
    assert "(cached)" in capsys.readouterr().out


def test_demo_without_the_data_set_names_the_apt_line(tmp_path, monkeypatch):
    import distill.data

    from distill.demo import DemoConfig, demo

    monkeypatch.setattr(distill.data, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(LabelStoreError, match="apt-get install dataset-fashion-mnist"):
        demo(DemoConfig(out_dir=str(tmp_path / "demo")), progress=False)
    assert not (tmp_path / "demo").exists()


def test_squeeze_random_resized_crop_is_a_crop():
    from distill.squeeze import random_resized_crop

    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    full = random_resized_crop(x, gen, (1.0, 1.0), ratio=(1.0, 1.0))  # the whole image, maybe flipped
    for i in range(2):
        assert torch.allclose(full[i], x[i], atol=1e-3) or torch.allclose(full[i], x[i].flip(-1), atol=1e-3)
    small = random_resized_crop(x, gen, (0.1, 0.1))
    assert small.shape == x.shape and float(small.std()) < float(x.std())  # a zoomed-in part varies less


def test_relabel_and_train_through_the_device_backend(teachers, images, tmp_path):
    # --backend device on this CPU machine: the image set as one uint8 tensor, batches cut there;
    # the file records the backend, so training through another backend is refused unless asked
    out = tmp_path / "dev.h5"
    relabel(RelabelConfig(images=images, teachers=[teachers[0]], out=str(out), epochs=2, batch_size=10, threads=2,
                          backend="device"), progress=False)
    with LabelFile(out) as f:
        assert f.pixels["backend"] == "device:cpu"
    res = _train(images, out, tmp_path / "t", "soft", epochs=2, backend="device")
    assert res["checkpoint"].exists()
    with pytest.raises(LabelStoreError, match="backend: recorded 'device:cpu', replay 'torch'"):
        _train(images, out, tmp_path / "u", "soft", epochs=1, backend="torch")
    assert _train(images, out, tmp_path / "v", "soft", epochs=1, backend="torch", allow_pixel_mismatch=True)["checkpoint"].exists()
