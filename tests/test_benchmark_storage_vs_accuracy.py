"""benchmarks/storage_vs_accuracy.py: the summary's verdicts on the issue's targets, from a results CSV."""
from __future__ import annotations

import csv
import json

import pytest

from benchmarks import storage_vs_accuracy as sva

FIELDS = ["source", "teacher", "codec", "S", "schedule", "seed", "label_bytes", "test_acc", "seconds", "mismatch"]
BYTES = {1: 12_000, 20: 56_000, 300: 700_000}
# (S, schedule) -> accuracies of two seeds; HALD wins at S=1 by 6 points, loses at S=20 and 300
ACC = {(1, "all-soft"): (0.60, 0.62), (1, "HALD"): (0.67, 0.67), (20, "all-soft"): (0.80, 0.82),
       (20, "HALD"): (0.75, 0.75), (300, "all-soft"): (0.80, 0.80), (300, "HALD"): (0.76, 0.76),
       (1, "HALD-auto"): (0.67, 0.67), (20, "HALD-auto"): (0.805, 0.81), (300, "HALD-auto"): (0.80, 0.80)}


def write_results(folder, extra=()):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for (S, sched), accs in ACC.items():
            for seed, acc in enumerate(accs):
                w.writerow({"source": "real", "teacher": "single", "codec": "dense16", "S": S, "schedule": sched,
                            "seed": seed, "label_bytes": BYTES[S], "test_acc": acc, "seconds": 1, "mismatch": 0.2})
        for row in extra:
            w.writerow(dict(zip(FIELDS, row)))


ARGS = ["--sources", "real", "--S", "1", "20", "300", "--schedules", "all-soft", "HALD", "HALD-auto",
        "--codecs", "dense16", "dense_q:bits=4", "--summarise-only"]


def test_summary_states_each_target_from_the_measured_rows(tmp_path, capsys):
    # a 4-bit file at S=20 of 1/20 of S=300's bytes, as accurate as S=300: the bytes target is met
    write_results(tmp_path, [("real", "single", "dense_q:bits=4", 20, "all-soft", s, 35_000, 0.805, 1, 0.2)
                             for s in range(2)])
    assert sva.main(ARGS + ["--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    t = summary["targets"]["real"]
    assert t["hald_minus_soft_at_S1"] == pytest.approx(6.0)
    assert "HALD - all-soft at S=1: +6.00 points" in text and "met" in text
    assert "HALD beats all-soft at S=[1]; loses or ties at S=[20, 300]" in text
    assert t["s300_reached_with_1_20_bytes"] is True
    assert "dense_q:bits=4 S=20 all-soft 80.50% at 35,000 B" in text
    assert summary["best"]["setting"] == ["real", "single", "dense16", 20, "all-soft"]
    assert (tmp_path / "storage_vs_accuracy.png").stat().st_size > 10_000


def test_summary_reports_a_missed_bytes_target(tmp_path, capsys):
    write_results(tmp_path, [("real", "single", "dense_q:bits=4", 20, "all-soft", 0, 36_000, 0.81, 1, 0.2)])
    sva.main(ARGS + ["--out", str(tmp_path)])
    assert "reached with <= 1/20 of the bytes: NO" in capsys.readouterr().out  # 36,000 B > 700,000 / 20


def test_summarise_only_needs_measured_runs(tmp_path):
    with pytest.raises(SystemExit, match="no measured runs"):
        sva.main(ARGS + ["--out", str(tmp_path / "empty")])
    assert not (tmp_path / "empty").exists()  # nothing written that a later run would take for results


def test_quick_preset_and_schedule_names():
    a = sva.parse_args(["--quick"])
    assert (a.sources, a.S, a.seeds, a.committee) == (["real"], [1, 5], 1, False) and a.out.endswith("-quick")
    assert a.cache_dir is None  # main() then caches in a fresh temporary folder: a smoke run always trains
    assert sva.parse_args(["--quick", "--out", "mine"]).out == "mine"  # an explicit --out is used as given
    assert (a.threads, sva.parse_args([]).threads, sva.parse_args(["--quick", "--threads", "2"]).threads) == (1, 2, 2)
    assert sva.SCHEDULES["HALD-auto"] == "hald:hard=auto" and sva.SCHEDULES["drift-gated"] == "soft|drift"
    assert [sva.relabel_mix("auto", s) for s in ("real", "sre2l", "cvdd")] == ["none", "cutmix", "cutmix"]
    assert sva.relabel_mix("none", "sre2l") == "none"  # an explicit choice wins
    from loaders import parse_schedule

    for text in sva.SCHEDULES.values():  # every name the benchmark offers is a schedule the loader takes
        assert str(parse_schedule(text)) == str(parse_schedule(str(parse_schedule(text))))


def test_main_leaves_the_callers_torch_thread_count(tmp_path):
    import torch

    write_results(tmp_path)
    before = torch.get_num_threads()
    assert sva.main(ARGS + ["--out", str(tmp_path), "--threads", str(before + 1)]) == 0
    assert torch.get_num_threads() == before  # it used to stay at --threads for the rest of the process
