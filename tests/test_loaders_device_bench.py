"""benchmarks/gpu_feed.py --quick from an empty working directory: every row, check and target in its JSON,
also on a machine without zstandard and h5py (as the GPU machine is), where the label rows say they are skipped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a module finder that makes the named modules absent for the subprocess, as on a machine without them
BLOCKER = """import importlib.abc, os, sys
_BLOCKED = set(os.environ["GPU_FEED_TEST_ABSENT"].split(","))
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Absent())
"""


def run_quick(tmp_path, absent=()):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    paths = [str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ)
    if absent:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
        paths.insert(0, str(tmp_path / "site"))
        env["GPU_FEED_TEST_ABSENT"] = ",".join(absent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_feed", "--quick", "--out", str(out)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert sorted(os.listdir(work)) == []  # everything went to --out
    return json.loads((out / "gpu_feed_quick.json").read_text()), proc.stdout


@pytest.mark.slow
def test_quick_run_has_every_row(tmp_path):
    result, stdout = run_quick(tmp_path)
    rows = {(r["kind"], r["backend"], r["labels"]): r for r in result["rows"]}
    for key in [("pixels", "device", None), ("pixels", "torch", None), ("pixels", "torch_w0", None),
                ("replay", "device", "topk:k=10"), ("replay", "device", "lowrank"), ("replay", "torch", "lowrank"),
                ("train", "upper", None), ("train", "device", None), ("train", "device", "topk:k=10"),
                ("train", "torch", "topk:k=10"), ("record", "teacher_alone", None),
                ("record", "device", "no writer"), ("record", "device", "topk:k=10")]:
        assert key in rows and rows[key]["images_per_s"] > 0, key
    assert all("vs_upper" in r for r in result["rows"] if r["kind"] == "train")
    assert all("vs_teacher" in r for r in result["rows"] if r["kind"] == "record")
    assert result["checks"] and all(result["checks"].values())  # every pixel path: the same bits
    assert set(result["targets"]) == {"CPU: device pixels >= TorchBackend pixels (worker processes)",
                                      "CPU: device pixels >= TorchBackend pixels (in process)"}
    assert result["missing"] == [] and result["skipped"] == [] and result["device"] == "cpu"
    assert "target CPU: device pixels" in stdout


@pytest.mark.slow
def test_quick_run_without_zstandard_and_h5py(tmp_path):
    result, stdout = run_quick(tmp_path, absent=("zstandard", "h5py"))
    kinds = {(r["kind"], r["labels"]) for r in result["rows"]}
    assert ("pixels", None) in kinds and ("train", None) in kinds and ("record", "no writer") in kinds
    assert not {k for k in kinds if k[0] == "replay" or k[1] in ("topk:k=10", "lowrank")}
    assert result["missing"] == ["zstandard", "h5py"] and len(result["skipped"]) == 3
    assert "label files cannot be written or read here (h5py and zstandard not installed)" in stdout
    assert all(result["checks"].values())
