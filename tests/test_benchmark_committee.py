"""benchmarks/committee.py: the whole pipeline in its smoke preset, the 2 x 2 table's arithmetic,
held-out priors, and a re-run that resumes instead of training again."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from benchmarks import committee as cm
from distill.data import from_arrays


def test_difference_and_its_standard_error():
    d, se = cm.diff([0.80, 0.82, 0.84], [0.70, 0.70, 0.70])
    assert d == pytest.approx(0.12)
    assert se == pytest.approx(0.02 / np.sqrt(3))  # std 0.02 over 3 seeds against a constant
    assert cm.diff([0.8], [0.7])[1] is None and cm.pm(0.1, None, True) == "+0.10 (n/a)"  # one seed: no error bar


def test_two_by_two_table_arithmetic():
    cell = {("best", "best"): [70.0, 72.0], ("best", "committee"): [73.0, 75.0],
            ("committee", "best"): [69.0, 69.0], ("committee", "committee"): [71.0, 73.0]}
    rows = cm.table_2x2(cell)
    assert rows[2] == "| best | 71.00 ± 1.4 | 74.00 ± 1.4 | +3.00 ± 1.4 |"  # se = sqrt(2/2 + 2/2)
    assert rows[3] == "| committee | 69.00 ± 0.0 | 72.00 ± 1.4 | +3.00 ± 1.0 |"
    assert rows[4] == "| committee − best | -2.00 ± 1.0 | -2.00 ± 1.4 | both: +1.00 ± 1.4 |"


def test_priors_are_measured_on_images_no_teacher_trained_on(tmp_path, monkeypatch):
    # a stand-in training split whose pixels spell each image's index, so the held-out set can be read back
    n = 3000
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 0, 0], images[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    full = from_arrays(images, np.arange(n) % 10, 10)
    seen = []
    monkeypatch.setattr(cm, "fashion_mnist", lambda split: full)
    monkeypatch.setattr(cm, "load_checkpoint", lambda path: (torch.nn.Identity(), {"mean": [0], "std": [1],
                                                                                  "image_size": 28}))
    monkeypatch.setattr(cm, "accuracy", lambda model, ds, *a, **k: seen.append(ds) or 0.5)
    paths = []
    for name, subset, seed in (("a", 1000, 0), ("b", 500, 3)):
        paths.append(tmp_path / f"{name}.pt")
        (tmp_path / f"{name}.config.json").write_text(json.dumps({"config": {"train_subset": subset, "seed": seed}}))
    a = cm.parse_args(["--prior-images", "400"])
    assert cm.measure_priors(a, paths) == [50.0, 50.0]
    index = lambda ds: (ds.images[:, 0, 0].astype(int) + 256 * ds.images[:, 0, 1].astype(int)).reshape(-1)  # noqa: E731
    trained = set(index(full.subset(1000, seed=0))) | set(index(full.subset(500, seed=3)))  # squeeze's draws
    held = index(seen[0])
    assert len(held) == 400 and not trained & set(held) and len(set(held)) == 400
    assert np.array_equal(index(seen[0]), index(seen[1]))  # every teacher judged on the same images


def test_a_cache_made_with_other_settings_is_refused(tmp_path):
    (tmp_path / "images.config.json").write_text(json.dumps({"config": {"iterations": 5, "ipc": 10}}))
    cm.check_cached(tmp_path / "images.npz", {"iterations": 5}, "image set", "committee")
    with pytest.raises(SystemExit, match=r"iterations=5 \(this run: 300\); use another --out"):
        cm.check_cached(tmp_path / "images.npz", {"iterations": 300, "ipc": 10}, "image set", "committee")


def test_quick_run_fills_the_two_by_two_and_resumes(tmp_path, capsys):
    out = tmp_path / "c"
    assert cm.main(["--quick", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    cells = {(r["recovery"], r["relabel"]) for r in rows}
    assert cells == {(a, b) for a in cm.SOURCES for b in cm.SOURCES}
    assert len(rows) == 4 * 2  # 4 cells x S in {1, 2} x 1 seed x 1 student x 1 recipe
    assert all(0.0 <= float(r["test_acc"]) <= 1.0 for r in rows)
    # S=1 is the first epoch of the S=2 file: fewer bytes, same relabel
    size = {(r["recovery"], r["relabel"], r["S"]): int(r["label_bytes"]) for r in rows}
    assert all(size[a, b, "1"] < size[a, b, "2"] for a, b in cells)
    info = json.loads((out / "summary.json").read_text())
    assert info["best"] == info["pool"][int(np.argmax(info["priors"]))]
    assert set(info["recognisability"]) == set(cm.SOURCES)
    best = info["recognisability"]["best"][info["best"]]
    assert best["honest"] is None and best["not_recovered"] == 0  # the best teacher judged its own images
    other = next(m for m in info["pool"] if m != info["best"])
    assert info["recognisability"]["best"][other]["not_recovered"] == 100  # every image: 10 classes x 10
    text = (out / "summary.md").read_text()
    assert text.count("| recovery \\ relabel |") == 2 and "committee − best" in text
    capsys.readouterr()
    assert cm.main(["--quick", "--out", str(out)]) == 0  # everything cached: no teacher, image or student again
    again = capsys.readouterr().out
    assert "8 students (8 already measured)" in again and "squeeze" not in again and "recover " not in again
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 8
    settings = json.loads((out / "settings.json").read_text())
    (out / "settings.json").write_text(json.dumps({**settings, "epochs": 3}))  # as if measured with 3 epochs
    with pytest.raises(SystemExit, match=r"epochs=3 \(this run: 4\); use another --out"):
        cm.main(["--quick", "--out", str(out)])


def test_a_committee_needs_two_teachers():
    with pytest.raises(SystemExit):
        cm.parse_args(["--pool", "convnet"])
