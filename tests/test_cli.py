"""The labelstore command line: exit codes, messages, output (run as a real subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np



def run(*args):
    return subprocess.run([sys.executable, "-m", "labelstore.cli", *map(str, args)], capture_output=True, text=True)


def test_inspect_text_and_json(label_file):
    path, _ = label_file
    r = run("inspect", path)
    assert r.returncode == 0, r.stderr
    for want in ("classes    10", "images     50", "epochs     3  batch size 16", "records    150", "codec      dense16",
                 "crops      derived; orders derived; mix none", "labels", "metadata"):
        assert want in r.stdout
    info = json.loads(run("inspect", path, "--json").stdout)
    assert info["records"] == 150 and info["image_fingerprint"] == "sha256:test"
    assert info["bytes"]["total"] == path.stat().st_size == sum(v for k, v in info["bytes"].items() if k != "total")


def test_inspect_drift(label_file, tmp_path):
    path, _ = label_file
    np.save(tmp_path / "classes.npy", np.arange(50) % 10)
    r = run("inspect", path, "--drift", tmp_path / "classes.npy")
    assert r.returncode == 0, r.stderr
    assert "top-1 != class" in r.stdout


def test_verify_ok_and_corrupt(label_file):
    path, _ = label_file
    r = run("verify", path)
    assert r.returncode == 0 and r.stdout.startswith("OK")
    data = bytearray(path.read_bytes())
    from labelstore import LabelFile

    with LabelFile(path) as f:
        start = f._data_offset + int(f._file()["chunks"][5]["offset"])
    data[start + 3] ^= 0x10
    path.write_bytes(bytes(data))
    r = run("verify", path)
    assert r.returncode == 1
    assert "BAD  " in r.stdout and "epoch 1 batch 1" in r.stdout and "whole-file checksum" in r.stdout


def test_errors_are_one_line_with_exit_2(tmp_path):
    r = run("inspect", tmp_path / "missing.h5")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "no label file" in r.stderr
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    r = run("verify", tmp_path / "junk.h5")  # another format is an input error, not damage
    assert r.returncode == 2 and r.stdout == "" and "not a labelstore label file" in r.stderr
    r = run("merge", tmp_path / "nothing.h5")
    assert r.returncode == 2 and "no shards to merge" in r.stderr


def test_merge_cli(tmp_path):
    from labelstore import LabelWriter

    for rank in range(2):
        w = LabelWriter(tmp_path / "m.h5", num_classes=4, num_images=10, seed=1, image_sizes=(8, 8), shard=(rank, 2))
        w.begin_epoch(0, 4)
        for b in range(w.num_batches(0)):
            if w.owns(b):
                w.write_batch(0, b, np.zeros((len(w.batch_indices(0, b)), 4), np.float32))
        w.finalize()
    r = run("merge", tmp_path / "m.h5")
    assert r.returncode == 0, r.stderr
    assert run("verify", tmp_path / "m.h5").returncode == 0
