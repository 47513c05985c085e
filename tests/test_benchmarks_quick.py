"""Every benchmarks/<name>.py runs with --quick from nothing: empty cache, empty output folder.

Each run is a subprocess in an empty working directory with $LABELSTORE_BENCH_CACHE pointing
at an empty folder, so no cache left by an earlier run (results/teacher_logits/, a resumed
results.csv) can stand in for a step that would fail on a fresh clone.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))

# benchmark -> files its --quick run must write under --out
OUTPUTS = {
    "codec_fidelity": ["codec_fidelity.csv", "codec_fidelity.png", "targets.txt"],
    "committee": None,  # run (and resumed) by tests/test_benchmark_committee.py
    "imagenet_lite": ["summary.md", "summary.json", "codec_fidelity.csv", "images.png"],
    "gpu_feed": None,  # run (twice, every row checked) by tests/test_loaders_device_bench.py; it has no cache
    "loader_throughput": ["loader_throughput_quick.csv", "loader_throughput_quick.json", "loader_throughput_quick.png"],
    "pack_throughput": ["pack_20000_dense16.json"],
    "reliability": ["reliability.json"],
    "scale": ["scale.json"],
    "storage_vs_accuracy": ["results.csv", "summary.json", "storage_vs_accuracy.png"],
}


def test_every_benchmark_has_a_quick_test():
    # a new benchmark without an entry here would run with nothing checked but its exit status
    assert [b for b in BENCHMARKS if b not in OUTPUTS] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", [b for b in BENCHMARKS if OUTPUTS.get(b) is not None])
def test_quick_run_from_empty_cache(name, tmp_path):
    work, cache, out = tmp_path / "work", tmp_path / "cache", tmp_path / "out"
    work.mkdir()
    cache.mkdir()
    env = {**os.environ, "LABELSTORE_BENCH_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick", "--out", str(out)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=400)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, f"exit {proc.returncode} after {seconds:.0f} s\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    missing = [f for f in OUTPUTS.get(name, []) if not (out / f).is_file() or (out / f).stat().st_size == 0]
    assert not missing, f"{name} --quick did not write {missing} under --out; wrote {sorted(os.listdir(out))}"
    # everything went to --out and the cache: a stray results/ in the working directory would be
    # a location the overrides do not reach
    assert sorted(os.listdir(work)) == []
    if name == "codec_fidelity":  # the teacher logits were computed in this run, into the given cache
        assert len(list(cache.glob("lite0_*_seed0/part00000.npy"))) == 1
        assert (cache / "fashion_convnet_10000_seed0.npy").is_file()
    print(f"{name} --quick: {seconds:.0f} s")


def test_lite0_loader_leaves_grad_mode_alone():
    pytest.importorskip("efficientnet_lite_pytorch")
    from benchmarks import _teacher_logits

    assert torch.is_grad_enabled()
    _teacher_logits.load_lite0()
    assert torch.is_grad_enabled()  # the old loader switched autograd off for the whole process


def test_lite0_cache_is_keyed_by_the_teachers_own_preprocessing(tmp_path):
    from benchmarks import _teacher_logits
    from distill.teachers import LITE_MEAN, LITE_STD, teacher_spec

    recipe = _teacher_logits.lite0_recipe()
    assert recipe["teacher"] == teacher_spec("lite0").to_dict()
    assert (recipe["teacher"]["mean"], recipe["teacher"]["std"]) == (list(LITE_MEAN), list(LITE_STD))
    folder = _teacher_logits.lite0_folder(0, tmp_path)
    # logits cached by the old code (torchvision mean/std) sit in lite0_seed0/ and are never read
    assert folder.parent == tmp_path and folder.name != "lite0_seed0" and folder.name.endswith("_seed0")
