"""squeeze -> recover -> evaluate on real Fashion-MNIST, small and fast."""

import csv
import json

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.data import fashion_mnist, load_npz
from distill.committee import committee_weights
from distill.evaluate import EvaluateConfig, evaluate
from distill.metrics import accuracy
from distill.models import load_checkpoint
from distill.recover import RecoverConfig, recover
from distill.squeeze import SqueezeConfig, squeeze
from labelstore.errors import LabelStoreError


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Two ConvNets squeezed for a few dozen steps on a 2k-image subset."""
    out = tmp_path_factory.mktemp("squeeze")
    cfg = SqueezeConfig(out_dir=str(out), models=["convnet", "convnet"], epochs=1, batch_size=64,
                        max_steps=20, train_subset=2000, test_subset=400, threads=2)
    return squeeze(cfg, progress=False)


def test_squeeze_writes_checkpoints_metrics_and_config(teachers):
    assert [p.name for p in teachers] == ["convnet-0.pt", "convnet-1.pt"]
    model, meta = load_checkpoint(teachers[0])
    assert meta["model"] == "convnet" and meta["num_classes"] == 10
    assert meta["in_channels"] == 1 and meta["image_size"] == 28
    assert 0.4 < meta["test_acc"] <= 1.0  # 20 steps already beat chance (0.1) by far
    rows = list(csv.DictReader(open(teachers[0].parent / "metrics.csv")))
    assert [r["model"] for r in rows] == ["convnet-0", "convnet-1"]
    assert float(rows[0]["test_acc"]) == pytest.approx(meta["test_acc"])
    cfg = json.loads((teachers[0].parent / "convnet-0.config.json").read_text())
    assert cfg["stage"] == "squeeze" and cfg["config"]["max_steps"] == 20
    # the round-tripped checkpoint scores what squeeze recorded on the same test subset
    test = fashion_mnist("test").subset(400, seed=0)
    assert accuracy(model, test, meta["mean"], meta["std"], progress=False) == pytest.approx(meta["test_acc"])


def test_evaluate_checkpoint_and_cli(teachers, capsys):
    res = evaluate(EvaluateConfig(checkpoint=str(teachers[0]), subset=300), progress=False)
    assert res["images"] == 300 and 0.4 < res["accuracy"] <= 1.0
    assert main(["evaluate", str(teachers[0]), "--subset", "300", "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(res["accuracy"])


def _bn_start_end(losses_csv, batch=0):
    rows = [r for r in csv.DictReader(open(losses_csv)) if int(r["batch"]) == batch]
    return float(rows[0]["bn"]), float(rows[-1]["bn"]), rows


def test_recover_sre2l(teachers, tmp_path):
    cfg = RecoverConfig(teachers=[str(teachers[0])], out_dir=str(tmp_path), ipc=1, iterations=20,
                        log_every=1, threads=2, beton=False)
    res = recover(cfg, progress=False)
    ds = load_npz(res["images"])
    assert ds.images.shape == (10, 28, 28, 1) and ds.images.dtype == np.uint8
    assert list(ds.labels) == list(range(10)) and ds.num_classes == 10
    assert ds.images.std() > 10  # real structure, not a constant image
    start, end, _ = _bn_start_end(res["losses"])
    assert end < 0.8 * start  # BN statistics matching works
    assert res["preview"].exists() and res["preview"].stat().st_size > 1000
    assert json.loads((tmp_path / "images.config.json").read_text())["stage"] == "recover"
    # the teacher recognises most of what was synthesised for it
    model, meta = load_checkpoint(teachers[0])
    assert accuracy(model, ds, meta["mean"], meta["std"], progress=False) >= 0.5


def test_recover_a_subset_of_classes(teachers, tmp_path, capsys):
    cfg = RecoverConfig(teachers=[str(teachers[0])], out_dir=str(tmp_path), ipc=2, iterations=2, classes=[7, 2, 9],
                        threads=2, beton=False)
    ds = load_npz(recover(cfg, progress=False)["images"])
    assert list(ds.labels) == [7, 2, 9, 7, 2, 9] and ds.num_classes == 10  # the teachers' label space
    for bad in ([3, 3], [10], []):
        with pytest.raises(LabelStoreError, match="distinct class ids in 0..9"):
            recover(RecoverConfig(teachers=[str(teachers[0])], out_dir=str(tmp_path / "x"), iterations=1,
                                  classes=bad), progress=False)
    assert not (tmp_path / "x").exists()
    assert main(["recover", "--teachers", str(teachers[0]), "--out", str(tmp_path / "c"), "--ipc", "1",
                 "--iterations", "1", "--classes", "0-8:4,9", "--no-beton", "--quiet"]) == 0
    assert list(load_npz(tmp_path / "c" / "images.npz").labels) == [0, 4, 8, 9]
    with pytest.raises(SystemExit):
        main(["recover", "--classes", "0..9"])
    assert "0-999:10" in capsys.readouterr().err


def test_preview_layout(tmp_path):
    from PIL import Image

    from distill.recover import save_grid

    one = np.random.default_rng(0).integers(0, 256, (100, 224, 224, 3), dtype=np.uint8)
    grid = Image.open(save_grid(tmp_path / "one.png", one, np.arange(0, 1000, 10), 1000))
    assert grid.size == (640, 640)  # one image per class: 10 rows of 10 classes, not a 64-px strip
    several = np.zeros((30, 28, 28, 1), np.uint8)
    several[:, 10:18, 10:18] = 255
    grid = np.asarray(Image.open(save_grid(tmp_path / "several.png", several, np.repeat(np.arange(10), 3), 10)))
    assert grid.shape == (640, 192, 3)  # a row per class, its 3 images
    assert grid[32, 32].tolist() == [255, 255, 255] and grid[0, 0].tolist() == [0, 0, 0]  # magnified, not blurred


def test_recover_cvdd_committee(teachers, tmp_path):
    cfg = RecoverConfig(teachers=[str(t) for t in teachers], out_dir=str(tmp_path), method="cvdd",
                        ipc=2, iterations=6, committee_size=2, log_every=1, threads=2, beton=False)
    res = recover(cfg, progress=False)
    assert load_npz(res["images"]).images.shape == (20, 28, 28, 1)
    for batch in (0, 1):
        start, end, rows = _bn_start_end(res["losses"], batch)
        assert end < start
        assert len(rows[0]["committee"].split()) == 2


def test_committee_weights_follow_cvdd():
    w = committee_weights([56.4, 42.3], 5.0)
    expected = torch.softmax(torch.tensor([56.4 / 5, 42.3 / 5]), 0)
    assert torch.allclose(w, expected) and w[0] > 0.9  # a 14-point prior gap nearly decides


def test_class_count_mismatch_is_clear(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    # no data set is recorded with a pretrained teacher: the check is against the one named
    cfg = RecoverConfig(teachers=["efficientnet-lite0"], out_dir=str(tmp_path), iterations=1, data="fashion-mnist")
    with pytest.raises(LabelStoreError, match="teacher has 1000 classes, data set fashion-mnist has 10"):
        recover(cfg, progress=False)


def test_cvdd_needs_priors(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    cfg = RecoverConfig(teachers=["efficientnet-lite0"], out_dir=str(tmp_path), method="cvdd", data="none")
    with pytest.raises(LabelStoreError, match="--priors"):
        recover(cfg, progress=False)


def test_later_stages_fail_clearly_on_missing_inputs(capsys, tmp_path):
    for stage in ("relabel", "train"):
        assert main([stage, "--images", str(tmp_path / "missing.npz"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"distill {stage}: error:") and "does not exist" in err
