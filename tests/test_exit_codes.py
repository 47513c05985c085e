"""One exit-code convention for every subcommand of both command lines (docs/cli.md):
0 ok, 1 a check that ran and failed, 2 a usage or input error, 3 a bug.

Run as the installed console scripts, in real subprocesses, on files written by the project.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from labelstore import LabelFile
from labelstore.cli import run_command
from labelstore.errors import LabelStoreError

BIN = Path(sys.executable).parent  # the environment the tests run in holds the console scripts
KNOWN = ("dense16:level=3", "dense_q:bits=8,level=3", "topk:k=10,step=0.03125", "lowrank:rank=16")


def cli(tool: str, *args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *want: str) -> None:
    """A failure is one line on stderr, no traceback, naming what is wrong."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    for w in want:
        assert w in r.stderr, r.stderr


def damage(path: Path) -> None:
    with LabelFile(path) as f:
        start = f._data_offset + int(f._file()["chunks"][2]["offset"])
    data = bytearray(path.read_bytes())
    data[start + 5] ^= 0x40
    path.write_bytes(bytes(data))


BUDGET = ("budget", "--images", 100, "--classes", 10, "--epochs", 4, "--batch-size", 10, "--crops", "derived")


# -- labelstore -------------------------------------------------------------------------------
def test_ok_is_0(label_file):
    path, _ = label_file
    for args in (("inspect", path), ("verify", path, "--quiet"), (*BUDGET, "--budget", "10MB", "--codecs", "dense16")):
        r = cli("labelstore", *args)
        assert r.returncode == 0, (args, r.stderr)


def test_damage_found_by_verify_is_1(label_file):
    path, _ = label_file
    damage(path)
    r = cli("labelstore", "verify", path)
    assert r.returncode == 1, r.stderr
    assert "BAD  " in r.stdout and "problem(s) found" in r.stderr
    # a truncated label file is damage too, not an input error
    path.write_bytes(path.read_bytes()[:-100])
    r = cli("labelstore", "verify", path)
    assert r.returncode == 1 and "truncated" in r.stdout, (r.stdout, r.stderr)


def test_nothing_fits_the_budget_is_1():
    r = cli("labelstore", *BUDGET, "--budget", "1kB", "--codecs", "dense16")
    assert r.returncode == 1, r.stderr
    assert "nothing fits" in r.stdout


def test_pack_when_nothing_fits_the_budget_is_1(tmp_path):
    np.savez(tmp_path / "a.npz", logits=np.random.default_rng(0).normal(size=(3, 20, 10)).astype(np.float32))
    r = cli("labelstore", "pack", tmp_path / "a.npz", tmp_path / "out.h5", "--budget", "1kB", "--quiet")
    one_line_error(r, "no configuration fits")
    assert not (tmp_path / "out.h5").exists()
    assert r.returncode == 1


def test_missing_input_is_2(label_file, tmp_path):
    path, _ = label_file
    missing = tmp_path / "missing.h5"
    np.save(tmp_path / "classes.npy", np.arange(50) % 10)
    cases = [
        (("verify", missing), "no label file"),
        (("inspect", missing), "no label file"),
        (("drift", missing, "--classes", tmp_path / "classes.npy"), "no label file"),
        (("drift", path, "--classes", tmp_path / "missing.npy"), "missing.npy"),
        (("export", missing, "--to", "sre2l", tmp_path / "out"), "missing.h5"),
        (("merge", missing), "no shards"),
        (("pack", tmp_path / "nosuchdir", tmp_path / "out.h5"), "nosuchdir"),
        ((*BUDGET, "--budget", "10MB", "--sample", tmp_path / "missing.npy"), "missing.npy"),
    ]
    for args, want in cases:
        r = cli("labelstore", *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        one_line_error(r, want)


def test_verify_of_something_that_is_not_a_label_file_is_2(tmp_path):
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(600))
    (tmp_path / "short.h5").write_bytes(b"LABEL")
    (tmp_path / "folder.h5").mkdir()
    for name, want in (("junk.h5", "not a labelstore label file"), ("short.h5", "not a labelstore label file"),
                       ("folder.h5", "is a folder")):
        r = cli("labelstore", "verify", tmp_path / name)
        assert r.returncode == 2 and r.stdout == "", (name, r.returncode, r.stdout)
        one_line_error(r, want)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files without permission")
def test_verify_of_an_unreadable_file_is_2(label_file):
    path, _ = label_file
    path.chmod(0)
    try:
        r = cli("labelstore", "verify", path)
    finally:
        path.chmod(0o644)
    assert r.returncode == 2
    one_line_error(r, "cannot read")


@pytest.mark.parametrize("spec, want", [
    ("topk:k=1O", "k must be an integer, got '1O'"),
    ("topq:k=10", "unknown codec 'topq' (did you mean topk?)"),
    ("topk=10", "no codec id before its parameters"),
    ("topk:kk=10", "no parameter 'kk'"),
])
def test_bad_codec_spec_is_2_and_names_the_codecs(spec, want, tmp_path):
    r = cli("labelstore", *BUDGET, "--budget", "10MB", "--codecs", f"dense16,{spec}")
    assert r.returncode == 2, r.stderr
    one_line_error(r, want, "topk")
    if "unknown codec" in want or "no codec id" in want:
        one_line_error(r, *KNOWN)
    np.savez(tmp_path / "a.npz", logits=np.zeros((20, 10), np.float32))
    r = cli("labelstore", "pack", tmp_path / "a.npz", tmp_path / "out.h5", "--codec", spec, "--quiet")
    assert r.returncode == 2, r.stderr
    one_line_error(r, want)
    assert not (tmp_path / "out.h5").exists()


def test_budget_refuses_unknown_codecs_instead_of_dropping_them():
    for codecs in ("nope", "dense16,nope", ",", "dense16;topq"):
        r = cli("labelstore", *BUDGET, "--budget", "10MB", "--codecs", codecs)
        assert r.returncode == 2, (codecs, r.stdout, r.stderr)
        one_line_error(r, "--codecs")
    # a spec's own parameters may follow it after commas
    r = cli("labelstore", *BUDGET, "--budget", "10MB", "--codecs", "topk:k=3,step=0.0625,dense16")
    assert r.returncode == 0, r.stderr
    assert "topk:k=3,step=0.0625" in r.stdout and "dense16" in r.stdout


def test_usage_errors_are_2():
    for tool, args in (("labelstore", ("verify",)), ("labelstore", ("frobnicate",)), ("labelstore", ("budget", "--images", "x"))):
        r = cli(tool, *args)
        assert r.returncode == 2 and "usage:" in r.stderr, (args, r.stderr)


def test_a_crash_is_3_not_a_failed_check(capsys):
    def boom(args):
        raise RuntimeError("an unforeseen bug")

    def gone(args):
        raise FileNotFoundError(2, "No such file or directory", "/no/such/file")

    def refused(args):
        raise LabelStoreError("bad input")

    assert run_command("labelstore", "x", boom, None) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "an unforeseen bug" in err and "internal error" in err
    assert run_command("labelstore", "x", gone, None) == 2  # an OS error on a named file is an input error
    assert capsys.readouterr().err.strip() == "labelstore x: error: /no/such/file: No such file or directory"
    assert run_command("labelstore", "x", refused, None) == 2
    assert run_command("labelstore", "x", lambda args: 1, None) == 1


# -- distill (shares labelstore.cli.run_command) ----------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained 16-channel ConvNet checkpoint and 20 Fashion-MNIST-shaped images."""
    from distill.data import ImageDataset, save_npz
    from distill.models import build_model, save_checkpoint

    d = tmp_path_factory.mktemp("distill")
    meta = {"model": "convnet-w16", "num_classes": 10, "in_channels": 1, "image_size": 28, "mean": [0.5], "std": [0.5]}
    ckpt = save_checkpoint(d / "teacher.pt", build_model("convnet-w16", 10, 1, 28), meta)
    rng = np.random.default_rng(0)
    images = save_npz(d / "images.npz", ImageDataset(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
                                                     np.arange(20) % 10, 10, "tiny"))
    return d, ckpt, images


def test_distill_exit_codes(tiny_run):
    d, ckpt, images = tiny_run
    r = cli("distill", "evaluate", ckpt, "--data", images, "--split", "train", "--quiet", "--json")
    assert r.returncode == 0, r.stderr
    r = cli("distill", "evaluate", d / "missing.pt", "--quiet")
    assert r.returncode == 2
    one_line_error(r, "missing.pt")
    r = cli("distill", "relabel", "--images", d / "missing.npz", "--teachers", ckpt, "--out", d / "x.h5", "--quiet")
    assert r.returncode == 2
    one_line_error(r, "missing.npz")
    r = cli("distill", "relabel", "--images", images, "--teachers", ckpt, "--out", d / "x.h5", "--epochs", 1,
            "--codec", "topk:k=1O", "--crop-scale", 0.5, 1, "--threads", 1, "--quiet")
    assert r.returncode == 2, r.stderr
    one_line_error(r, "k must be an integer, got '1O'")
    r = cli("distill", "train", "--frobnicate")
    assert r.returncode == 2 and "usage:" in r.stderr


def test_distill_relabel_when_nothing_fits_the_budget_is_1(tiny_run):
    d, ckpt, images = tiny_run
    r = cli("distill", "relabel", "--images", images, "--teachers", ckpt, "--out", d / "b.h5", "--epochs", 2,
            "--budget", "1B", "--crop-scale", 0.5, 1, "--threads", 1, "--quiet")
    one_line_error(r, "too small")
    assert r.returncode == 1
