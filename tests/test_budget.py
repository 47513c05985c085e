"""budget: predicted bytes match what pack writes (within 5%), the rule picks as documented,
and pack --budget never writes a file over the budget."""
from __future__ import annotations

import numpy as np
import pytest

from fixtures_prior_art import write_sre2l
from labelstore import LabelFile, LabelStoreError
from labelstore.budget import Config, Plan, choose, plan_for_source
from labelstore.cli import main as cli_main
from labelstore.fidelity import Fidelity, measure
from labelstore.importers import open_source
from labelstore.pack import pack


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    d = tmp_path_factory.mktemp("b") / "s"
    write_sre2l(d, num_images=60, num_classes=50, epochs=8, batch_size=16)
    return d


@pytest.mark.parametrize("budget", [10**7, 60_000, 30_000])
def test_predicted_bytes_within_5_percent(src, tmp_path, budget):
    r = open_source(src)
    plan = plan_for_source(r, r.info.epochs, budget, r.sample_logits(20_000, r.info.epochs))
    chosen = plan.chosen
    res = pack(src, tmp_path / "l.h5", budget=budget, progress=False, log=lambda m: None)
    assert res.file_bytes <= budget
    assert abs(res.file_bytes - chosen.predicted_bytes) / res.file_bytes < 0.05
    with LabelFile(tmp_path / "l.h5") as f:
        assert f.num_epochs == chosen.stored_epochs and f.codec.codec_id == chosen.codec_spec.partition(":")[0]
        assert f.user_attrs["source_epochs"] == list(range(chosen.stored_epochs))  # the first epochs (label pool)


def test_budget_too_small_writes_nothing(src, tmp_path):
    with pytest.raises(LabelStoreError, match="no configuration fits"):
        pack(src, tmp_path / "l.h5", budget="5kB", progress=False)
    assert not (tmp_path / "l.h5").exists()


def _cfg(spec, E, kl, size):
    return Config(spec, None, E, "explicit", size, Fidelity(kl, kl, 1.0, 1.0, 1), True)


def test_choice_rule():
    p = Plan(100, 10, 10, 8, 4, [_cfg("a", 2, 0.0, 90), _cfg("b", 8, 5e-4, 80), _cfg("c", 8, 0.5, 10), _cfg("d", 8, 5e-4, 70)])
    choose(p, tolerance=1e-3)
    assert p.chosen.codec_spec == "d"  # ties with the best go to more epochs, then fewer bytes
    choose(p, tolerance=1e-5)
    assert p.chosen.codec_spec == "a"  # strictly most faithful


def test_fidelity_metrics():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 30)).astype(np.float32) * 3
    shifted = measure(z, z + 5.0)  # a per-record shift changes no softmax
    assert shifted.kl_t20 < 1e-12 and shifted.kl_t1 < 1e-12 and shifted.top1 == 1.0 and shifted.top5 == 1.0
    f = measure(z, z + rng.normal(size=z.shape).astype(np.float32))
    assert 0 < f.kl_t20 < f.kl_t1 and 0 < f.top1 < 1 and 0 < f.top5 <= 1


def test_cli_budget_with_sample(tmp_path, capsys):
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, (512, 100)).astype(np.float32)
    z[np.arange(512), rng.integers(0, 100, 512)] += 8
    np.save(tmp_path / "s.npy", z)
    rc = cli_main(["budget", "--images", "1000", "--classes", "100", "--epochs", "300", "--batch-size", "100",
                   "--budget", "20MB", "--sample", str(tmp_path / "s.npy")])
    out = capsys.readouterr().out
    assert rc == 0 and "records of" in out and "pack --budget` chooses" in out
    assert sum(line.startswith("* ") for line in out.splitlines()) == 1
    rc = cli_main(["budget", "--images", "1000", "--classes", "100", "--epochs", "300", "--batch-size", "100", "--budget", "1kB"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err
    assert "nothing fits" in captured.out
