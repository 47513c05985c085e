"""benchmarks/committee.py: the whole pipeline in its smoke preset, the 2 x 2 table's arithmetic,
held-out priors, and a re-run that resumes instead of training again."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from benchmarks import committee as cm
from distill.data import fashion_mnist


def test_difference_and_its_standard_error():
    d, se = cm.diff([0.80, 0.82, 0.84], [0.70, 0.70, 0.70])
    assert d == pytest.approx(0.12)
    assert se == pytest.approx(0.02 / np.sqrt(3))  # std 0.02 over 3 seeds against a constant


def test_priors_are_measured_on_images_no_teacher_trained_on():
    full = fashion_mnist("train")
    trained = full.subset_indices(1000, seed=0)
    assert len(trained) == 1000 and np.array_equal(full.subset(1000, seed=0).labels, full.labels[trained])
    rest = np.setdiff1d(np.arange(len(full)), trained)
    assert not np.intersect1d(rest, trained).size and len(rest) == len(full) - 1000


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
    text = (out / "summary.md").read_text()
    assert text.count("| recovery \\ relabel |") == 2 and "committee − best" in text
    capsys.readouterr()
    assert cm.main(["--quick", "--out", str(out)]) == 0  # everything cached: no teacher, image or student again
    again = capsys.readouterr().out
    assert "8 students (8 already measured)" in again and "squeeze" not in again and "recover " not in again
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 8


def test_a_committee_needs_two_teachers():
    with pytest.raises(SystemExit):
        cm.parse_args(["--pool", "convnet"])
