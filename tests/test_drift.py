"""drift: mismatch fractions and per-image spread computed from a real packed file."""
from __future__ import annotations

import numpy as np

from fixtures_prior_art import image_class, write_sre2l
from labelstore import LabelFile
from labelstore.cli import main as cli_main
from labelstore.drift import drift_report
from labelstore.pack import pack


def test_drift_matches_direct_computation(tmp_path):
    write_sre2l(tmp_path / "s", num_images=30, num_classes=10, epochs=4, batch_size=8)
    pack(tmp_path / "s", tmp_path / "l.h5", progress=False)
    classes = image_class(np.arange(30), 10)
    classes[:3] = (classes[:3] + 1) % 10  # three images "labelled" with the wrong class
    rep = drift_report(tmp_path / "l.h5", classes, T=4.0)
    probs = {i: [] for i in range(30)}
    miss = 0
    with LabelFile(tmp_path / "l.h5") as f:
        for bt in f.batches():
            miss += int((bt.logits.argmax(1) != classes[bt.indices]).sum())
            for i, p in zip(bt.indices, bt.probs(4.0)):
                probs[int(i)].append(p.astype(np.float64))
    assert rep.records == 120 and rep.mismatch == miss / 120 and rep.mismatch >= 12 / 120
    for i in (0, 17):
        want = np.trace(np.cov(np.array(probs[i]).T, bias=True))
        assert abs(rep.spread[i] - want) < 1e-9
    assert rep.per_class_mismatch[(classes[0])] > 0


def test_cli_drift_and_plot(tmp_path, capsys):
    write_sre2l(tmp_path / "s", num_images=20, num_classes=10, epochs=2, batch_size=8)
    pack(tmp_path / "s", tmp_path / "l.h5", progress=False)
    np.save(tmp_path / "c.npy", image_class(np.arange(20), 10))
    assert cli_main(["drift", str(tmp_path / "l.h5"), "--classes", str(tmp_path / "c.npy"), "--plot", str(tmp_path / "d.png")]) == 0
    assert "top-1 != class" in capsys.readouterr().out and (tmp_path / "d.png").stat().st_size > 1000
    np.save(tmp_path / "bad.npy", np.arange(5))
    assert cli_main(["drift", str(tmp_path / "l.h5"), "--classes", str(tmp_path / "bad.npy")]) == 2


def test_worst_classes_are_classes_with_records(tmp_path):
    # 1000 classes, images of only three of them (a class subset of ImageNet): the summary's
    # worst classes are among those three, never a class no record belongs to
    write_sre2l(tmp_path / "s", num_images=15, num_classes=1000, epochs=2, batch_size=4)
    pack(tmp_path / "s", tmp_path / "l.h5", progress=False)
    classes = np.array([5, 500, 999] * 5)
    rep = drift_report(tmp_path / "l.h5", classes)
    assert rep.per_class_records.sum() == rep.records == 30
    worst = rep.summary().splitlines()[-1].removeprefix("worst classes").strip()
    assert {int(part.split(":")[0]) for part in worst.split(", ")} == {5, 500, 999}
