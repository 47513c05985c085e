"""benchmarks/codec_fidelity.py --labels: every codec scored on a label file's own records,
learned codecs fitted on records that are never scored (or on another label file)."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from benchmarks import codec_fidelity as cf

from conftest import write_label_set


def test_records_of_a_label_file_in_storage_order(tmp_path):
    written = write_label_set(tmp_path / "a.h5", num_images=40, epochs=2, batch_size=16)
    logits, ids = cf.file_logits(tmp_path / "a.h5")
    assert logits.shape == (80, 10) and ids.shape == (80,)
    want = np.concatenate([written[k][0] for k in sorted(written)])
    assert np.abs(logits - want).max() < 0.02  # dense16: fp16 rounding only
    assert sorted(ids[:40].tolist()) == list(range(40))  # epoch 0 holds every image once


def test_fit_on_own_records_or_another_file(tmp_path, capsys):
    write_label_set(tmp_path / "a.h5", num_images=60, epochs=4, batch_size=20, data_seed=0)
    write_label_set(tmp_path / "b.h5", num_images=60, epochs=4, batch_size=20, data_seed=1)
    out = tmp_path / "out"
    cf.main(["--labels", str(tmp_path / "a.h5"), "--fit-labels", str(tmp_path / "b.h5"), "--fit", "100",
             "--repeats", "1", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "codec_fidelity.csv")))
    own = [r for r in rows if "fit on 100 of its other records" in r["dataset"]]
    other = [r for r in rows if r["dataset"].endswith("/b.h5")]
    assert len(own) == len(other) == len(cf.SETTINGS_10) + 2  # every 10-class setting and both baselines
    # both fits scored on the same 140 records: the 240 less the 100 the own fit took
    assert "140 records" in own[0]["dataset"] and "140 records" in other[0]["dataset"]
    assert own[0]["bytes_per_record"] == other[0]["bytes_per_record"]  # the SRe2L baseline: same records
    dense = {r["dataset"]: float(r["top1"]) for r in own + other if r["codec"] == "dense16"}
    assert all(v == 1.0 for v in dense.values())
    assert "no 1000-class rows" in (out / "targets.txt").read_text()


def test_refusals(tmp_path):
    write_label_set(tmp_path / "a.h5", num_images=10, epochs=1, batch_size=10)
    write_label_set(tmp_path / "c.h5", num_images=10, epochs=1, batch_size=10, num_classes=5)
    with pytest.raises(SystemExit, match="nothing left to score"):
        cf.main(["--labels", str(tmp_path / "a.h5"), "--fit", "10", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="one label space"):
        cf.main(["--labels", str(tmp_path / "a.h5"), "--fit-labels", str(tmp_path / "c.h5"), "--fit", "4",
                 "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        cf.main(["--fit-labels", str(tmp_path / "a.h5")])
