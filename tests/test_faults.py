"""Faults: a full disk, random bytes, malformed HDF5 — only the project's error, nothing lost."""
from __future__ import annotations

import os
import subprocess

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelstore import LabelFile, LabelStoreError, LabelWriter, verify_file
from conftest import make_logits, write_label_set


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, so the disk really fills; grown later with a remount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _writer(path):
    return LabelWriter(path, num_classes=1000, num_images=768, codec="dense16", seed=3, image_sizes=(64, 64))


def _batches():
    rng = np.random.default_rng(0)
    return [make_logits(rng, 32, 1000) for _ in range(24)]


def test_full_disk_is_a_clear_error_and_resumes(small_disk):
    path = small_disk / "labels.h5"
    logits = _batches()  # 24 x 64 KB of fp16 that zstd cannot shrink much: more than the disk holds
    w = _writer(path)
    w.begin_epoch(0, 32)
    written = 0
    with pytest.raises(LabelStoreError, match="free space and run the same command again"):
        for b in range(24):
            w.write_batch(0, b, logits[b])
            written += 1
    w.close()
    assert 0 < written < 24
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    w = _writer(path)
    w.begin_epoch(0, 32)
    assert w.written == {(0, b) for b in range(written)}
    for b in range(24):
        if not w.is_written(0, b):
            w.write_batch(0, b, logits[b])
    w.finalize()
    with LabelFile(path) as f:
        for b in range(24):
            np.testing.assert_array_equal(f[0, b].logits, logits[b].astype(np.float16).astype(np.float32))
    assert verify_file(path).ok


def test_full_disk_at_finalize_keeps_the_journal(small_disk):
    path = small_disk / "labels.h5"
    logits = _batches()[:5]
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    w = LabelWriter(path, num_classes=1000, num_images=160, codec="dense16", seed=3, image_sizes=(64, 64))
    w.begin_epoch(0, 32)
    for b in range(5):
        w.write_batch(0, b, logits[b])
    st_ = os.statvfs(small_disk)
    used_kb = (st_.f_blocks - st_.f_bfree) * st_.f_frsize // 1024
    # room for half of the finished file only
    subprocess.run(["mount", "-o", f"remount,size={int(used_kb * 1.5) + 8}k", str(small_disk)], check=True)
    with pytest.raises(LabelStoreError, match="journal .* is intact"):
        w.finalize()
    assert not path.exists() and not [p for p in os.listdir(small_disk) if p.startswith(".labels")]
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    w = LabelWriter(path, num_classes=1000, num_images=160, codec="dense16", seed=3, image_sizes=(64, 64))
    w.begin_epoch(0, 32)
    w.finalize()
    assert verify_file(path).ok


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=4096), keep_head=st.booleans())
def test_random_bytes_only_raise_the_project_error(tmp_path, data, keep_head):
    """Random bytes, with or without a valid user block in front, never crash the reader."""
    path = tmp_path / "fuzz.h5"
    head = b""
    if keep_head:
        from labelstore._format import USERBLOCK_DTYPE, USERBLOCK_MAGIC

        h = np.zeros(1, USERBLOCK_DTYPE)
        h[0] = (USERBLOCK_MAGIC, 1, 512 + len(data), 0)
        head = h.tobytes().ljust(512, b"\0")
    path.write_bytes(head + data)
    with pytest.raises(LabelStoreError):
        LabelFile(path)
    assert not verify_file(path).ok


def _damage(path, action):
    """Edit a finished file's HDF5 structure in place, then re-seal its user block so only HDF5-level checks remain."""
    with h5py.File(path, "r+") as f:
        action(f)
    from labelstore._build import _seal

    _seal(path)


MALFORMED = {
    "no chunk table": lambda f: f.__delitem__("chunks"),
    "no data": lambda f: f.__delitem__("data"),
    "no epochs": lambda f: f.__delitem__("epochs"),
    "no codec attribute": lambda f: f.attrs.__delitem__("codec"),
    "codec of another id": lambda f: f.attrs.__setitem__("codec", '{"id": "nonesuch", "num_classes": 10}'),
    "data shortened": lambda f: (f.__delitem__("data"), f.create_dataset("data", data=np.zeros(10, np.uint8))),
    "chunk table of wrong dtype": lambda f: (f.__delitem__("chunks"), f.create_dataset("chunks", data=np.zeros((3, 3)))),
    "epochs say more batches": lambda f: f["epochs"].__setitem__("num_batches", f["epochs"]["num_batches"] + 5),
    "chunk offsets past the end": lambda f: f["chunks"].__setitem__("offset", f["chunks"]["offset"] + 10**9),
    "not a labelstore file": lambda f: f.attrs.__setitem__("format", "other"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_structures_raise_the_project_error(tmp_path, name):
    path = tmp_path / "m.h5"
    write_label_set(path, epochs=2)
    _damage(path, MALFORMED[name])
    assert not verify_file(path).ok
    try:
        with LabelFile(path) as f:
            for e in range(f.num_epochs):
                for b in range(f.num_batches(e)):
                    f[e, b]
    except LabelStoreError:
        return
    pytest.fail(f"{name}: read without an error")
