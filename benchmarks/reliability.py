"""Faults and bad input, counted: crash safety, corruption, fuzzing, concurrency, full disk.

    python -m benchmarks.reliability [--quick] [--out results/reliability]

Prints each figure and exits non-zero if anything was silently wrong (a resumed file that
differs, a corruption read back as data, a crash other than LabelStoreError, a wrong value
under concurrency). The test suite runs quick versions of each check; this runs the counts.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from labelstore import LabelFile, LabelStoreError, LabelWriter, verify_file

NUM_CLASSES, NUM_IMAGES, EPOCHS, BATCH = 1000, 512, 4, 64
CODEC = "dense_q:bits=8"


def _logits(epoch: int, batch: int, n: int) -> np.ndarray:
    """Deterministic teacher-like logits per (epoch, batch): what a seeded relabel run produces."""
    rng = np.random.default_rng([epoch, batch])
    z = rng.normal(0, 2, (n, NUM_CLASSES)).astype(np.float32)
    z[np.arange(n), rng.integers(0, NUM_CLASSES, n)] += 8
    return z


def relabel(path: Path, slow: float = 0.0) -> None:
    """A relabel run: resumes whatever journal is there, writes the rest, finalizes."""
    if path.exists():
        return
    w = LabelWriter(path, num_classes=NUM_CLASSES, num_images=NUM_IMAGES, codec=CODEC, seed=11, image_sizes=(224, 224))
    for e in range(EPOCHS):
        w.begin_epoch(e, BATCH)
        for b in range(w.num_batches(e)):
            if not w.is_written(e, b):
                w.write_batch(e, b, _logits(e, b, len(w.batch_indices(e, b))))
                time.sleep(slow)
    w.finalize()


def same_content(a: Path, b: Path) -> bool:
    with LabelFile(a) as x, LabelFile(b) as y:
        if x.num_epochs != y.num_epochs:
            return False
        for p, q in zip(x.batches(), y.batches()):
            if not (np.array_equal(p.logits, q.logits) and np.array_equal(p.indices, q.indices) and np.array_equal(p.boxes, q.boxes)):
                return False
    return True


def crash_safety(tmp: Path, runs: int, rng: np.random.Generator) -> dict:
    ref = tmp / "ref.h5"
    t0 = time.perf_counter()
    relabel(ref)
    full = time.perf_counter() - t0
    ctx = mp.get_context("fork")
    bad, readable_early, kills = 0, 0, []
    for i in range(runs):
        path = tmp / f"crash{i}.h5"
        n_kills = 0
        while not path.exists():
            p = ctx.Process(target=relabel, args=(path,))
            p.start()
            delay = float(rng.uniform(0, full * 1.2))
            p.join(delay)
            if p.is_alive():
                os.kill(p.pid, signal.SIGKILL)
                p.join()
                n_kills += 1
                if path.exists():
                    try:  # killed after the atomic rename: must be complete and valid
                        readable_early += 0 if verify_file(path).ok else 1
                    except Exception:
                        readable_early += 1
        kills.append(n_kills)
        bad += 0 if same_content(path, ref) else 1
        path.unlink()
    return {"runs": runs, "kills": int(sum(kills)), "resumed_files_differing": bad, "incomplete_files_readable": readable_early}


def corruption(tmp: Path, count: int, rng: np.random.Generator) -> dict:
    ref = tmp / "ref.h5"
    original = ref.read_bytes()
    with LabelFile(ref) as f:
        truth = {(e, b): f.read_logits(e, b) for e in range(f.num_epochs) for b in range(f.num_batches(e))}
    path = tmp / "corrupt.h5"
    verify_missed = silent = crashes = 0
    kinds = {"flip": 0, "truncate": 0}
    for i in range(count):
        data = bytearray(original)
        if i % 5 == 4:
            data = data[: int(rng.integers(0, len(data)))]
            kinds["truncate"] += 1
        else:
            pos = int(rng.integers(0, len(data)))
            data[pos] ^= 1 << int(rng.integers(8))
            kinds["flip"] += 1
        path.write_bytes(bytes(data))
        try:
            if verify_file(path).ok:
                verify_missed += 1
            with LabelFile(path) as f:
                for (e, b), want in truth.items():
                    try:
                        got = f.read_logits(e, b)
                    except LabelStoreError:
                        continue
                    if not np.array_equal(got, want):
                        silent += 1
        except LabelStoreError:
            pass
        except Exception:
            crashes += 1
    return {"corruptions": count, **kinds, "missed_by_verify": verify_missed, "silently_wrong_reads": silent, "other_exceptions": crashes}


def fuzz(tmp: Path, count: int, rng: np.random.Generator) -> dict:
    """Random bytes, and random bytes behind a valid user block, fed to the reader and verify."""
    from labelstore._format import USERBLOCK_DTYPE, USERBLOCK_MAGIC

    path = tmp / "fuzz.h5"
    original = (tmp / "ref.h5").read_bytes()
    other = 0
    for i in range(count):
        kind = i % 3
        if kind == 0:
            data = rng.bytes(int(rng.integers(0, 8192)))
        elif kind == 1:
            body = rng.bytes(int(rng.integers(0, 8192)))
            head = np.zeros(1, USERBLOCK_DTYPE)
            head[0] = (USERBLOCK_MAGIC, 1, 512 + len(body), 0)
            data = head.tobytes().ljust(512, b"\0") + body
        else:  # a real file with a random block overwritten by random bytes, size kept
            data = bytearray(original)
            start = int(rng.integers(0, len(data) - 64))
            data[start : start + 64] = rng.bytes(64)
            data = bytes(data)
        path.write_bytes(data)
        try:
            with LabelFile(path) as f:
                for e in range(f.num_epochs):
                    for b in range(f.num_batches(e)):
                        f.read_batch(e, b)
        except LabelStoreError:
            pass
        except Exception as exc:  # noqa: BLE001 - this is what we count
            other += 1
            print(f"  fuzz case {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return {"inputs": count, "other_exceptions": other}


def _reader_proc(path, keys, expect_q, out_q):
    f = LabelFile(path)
    wrong = 0
    for e, b in keys:
        if f.read_logits(e, b).tobytes() != expect_q[(e, b)]:
            wrong += 1
    out_q.put(wrong)


def concurrency(tmp: Path, procs: int, rounds: int) -> dict:
    ref = tmp / "ref.h5"
    f = LabelFile(ref)
    keys = [(e, b) for e in range(f.num_epochs) for b in range(f.num_batches(e))]
    truth = {k: f.read_logits(*k).tobytes() for k in keys}
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    wrong_threads = [0]

    def thread_reader():  # threads in this process share one LabelFile, as FFCV's threads would
        for _ in range(rounds):
            for k in keys:
                if f.read_logits(*k).tobytes() != truth[k]:
                    wrong_threads[0] += 1

    threads = [threading.Thread(target=thread_reader) for _ in range(4)]
    ps = [ctx.Process(target=_reader_proc, args=(ref, keys * rounds, truth, q)) for _ in range(procs)]
    for t in threads:
        t.start()
    for p in ps:
        p.start()
    wrong_procs = sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    for t in threads:
        t.join()
    return {"processes": procs, "threads": len(threads), "reads": (procs + len(threads)) * rounds * len(keys), "wrong_values": wrong_procs + wrong_threads[0]}


def _hash_teacher(x):
    """A deterministic 'teacher': logits from pooled pixels, so values depend on the exact crops."""
    import torch

    w = torch.linspace(-1, 1, 3 * 16 * NUM_CLASSES).view(3 * 16, NUM_CLASSES)
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1) @ w


def concurrency_ffcv(tmp: Path, procs: int) -> dict:
    """8 processes read a label file while a ReplayLoader on FFCV (numba threads) replays it."""
    try:
        from loaders import FFCVBackend, ReplayLoader, record_labels, write_beton
    except ImportError as exc:
        return {"skipped": f"FFCV not installed ({exc})"}
    from labelstore import CropPolicy, MixPolicy

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (NUM_IMAGES, 48, 48, 3), dtype=np.uint8)
    beton = tmp / "images.beton"
    info = write_beton(images, beton, progress=False)
    backend = FFCVBackend(beton, num_workers=2)
    path = tmp / "ffcv_labels.h5"
    with LabelWriter(path, num_classes=NUM_CLASSES, num_images=NUM_IMAGES, codec=CODEC, seed=5,
                     image_fingerprint=info.fingerprint, image_sizes=backend.image_sizes,
                     crop_policy=CropPolicy(size=(32, 32)), mix_policy=MixPolicy("cutmix")) as w:
        record_labels(w, backend, _hash_teacher, epochs=EPOCHS, batch_size=BATCH, progress=False)
    f = LabelFile(path)
    keys = [(e, b) for e in range(f.num_epochs) for b in range(f.num_batches(e))]
    truth = {k: f.read_logits(*k).tobytes() for k in keys}
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_reader_proc, args=(path, keys * 3, truth, q)) for _ in range(procs)]
    for p in ps:
        p.start()
    loader = ReplayLoader(f, backend, "soft", epochs=EPOCHS * 3, pool="cycle")
    wrong = steps = 0
    for _ in range(EPOCHS * 3):
        for step in loader:
            steps += 1
            if step.logits.numpy().tobytes() != truth[step.stored]:
                wrong += 1
    wrong += sum(q.get() for _ in ps)
    for p in ps:
        p.join()
    return {"processes": procs, "ffcv_threads": 2, "replayed_steps": steps, "process_reads": procs * 3 * len(keys), "wrong_values": wrong}


def full_disk(tmp: Path) -> dict:
    mnt = tmp / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        return {"skipped": "mounting a tmpfs needs root"}
    try:
        path = mnt / "labels.h5"
        try:
            relabel(path)
            return {"error_raised": False, "resumed_equal": False}
        except LabelStoreError as exc:
            message = str(exc)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        relabel(path)
        return {"error_raised": True, "message": message, "resumed_equal": same_content(path, tmp / "ref.h5")}
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts for a smoke run")
    ap.add_argument("--out", default="results/reliability")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    n_crash, n_corrupt, n_fuzz, rounds = (4, 100, 100, 1) if args.quick else (20, 1000, 1000, 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {}
        t0 = time.perf_counter()
        res["crash_safety"] = crash_safety(tmp, n_crash, rng)
        print("crash safety  ", res["crash_safety"], flush=True)
        res["corruption"] = corruption(tmp, n_corrupt, rng)
        print("corruption    ", res["corruption"], flush=True)
        res["fuzz"] = fuzz(tmp, n_fuzz, rng)
        print("fuzzing       ", res["fuzz"], flush=True)
        res["concurrency"] = concurrency(tmp, 8, rounds)
        print("concurrency   ", res["concurrency"], flush=True)
        res["concurrency_ffcv"] = concurrency_ffcv(tmp, 8)
        print("ffcv + procs  ", res["concurrency_ffcv"], flush=True)
        res["full_disk"] = full_disk(tmp)
        print("full disk     ", {k: v for k, v in res["full_disk"].items() if k != "message"}, flush=True)
        res["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "reliability.json").write_text(json.dumps(res, indent=1))
    failures = [
        res["crash_safety"]["resumed_files_differing"], res["crash_safety"]["incomplete_files_readable"],
        res["corruption"]["missed_by_verify"], res["corruption"]["silently_wrong_reads"], res["corruption"]["other_exceptions"],
        res["fuzz"]["other_exceptions"], res["concurrency"]["wrong_values"],
        res["concurrency_ffcv"].get("wrong_values", 0),
        0 if res["full_disk"].get("skipped") or (res["full_disk"]["error_raised"] and res["full_disk"]["resumed_equal"]) else 1,
    ]
    print(f"silent failures: {sum(failures)}  ({res['seconds']} s; JSON in {out / 'reliability.json'})")
    return 1 if sum(failures) else 0


if __name__ == "__main__":
    sys.exit(main())
