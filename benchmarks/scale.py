"""Scale: bytes, memory and time of label files at ImageNet size, measured and extrapolated.

    python -m benchmarks.scale [--quick] [--out results/scale]

Writes and reads generated label sets at 1000 classes (ImageNet-1K at 10 images per class x
300 epochs, the size LPLD's IPC10 labels have) and one epoch at 21,843 classes (ImageNet-21K
at 10 images per class), timing the writer (encode + journal + finalize, the teacher
excluded), the file size, random batch reads and the peak memory of writer and reader, each
in a fresh child process. Per-record costs are then extrapolated to the sizes the papers use.
Logits at 1000 classes are real EfficientNet-Lite0 outputs when the codec benchmark's cache
has them (--cache-dir, default $LABELSTORE_BENCH_CACHE or results/teacher_logits/), otherwise
teacher-like synthetic logits (it says which).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from labelstore import LabelFile, LabelWriter

BATCH = 1024
# (name, images, classes, epochs): the targets of docs/scaling.md; SRe2L/LPLD fp16 sizes from prior-art.md
TARGETS = [
    ("ImageNet-1K IPC10 x 300 epochs", 10_000, 1000, 300, 5.67e9),
    ("ImageNet-1K IPC50 x 300 epochs", 50_000, 1000, 300, 28.33e9),
    # ImageNet-21K as SRe2L/LPLD use it: the 21K-P (winter 21) release, 10,450 classes
    ("ImageNet-21K-P IPC10 x 300 epochs", 104_500, 10_450, 300, 643e9),
]


def logit_pool(num_classes: int, rng: np.random.Generator, cache_dir: Path | None = None) -> tuple[np.ndarray, str]:
    if num_classes == 1000:
        from benchmarks._teacher_logits import cached_lite0

        pool = cached_lite0(cache_dir=cache_dir)[0][: 40 * 512].astype(np.float32)
        if len(pool) >= 2048:
            return pool, f"real EfficientNet-Lite0 logits ({len(pool)} crops, reused cyclically)"
    z = rng.normal(0, 1.5, (4096, num_classes)).astype(np.float32)
    z[np.arange(4096), rng.integers(0, num_classes, 4096)] += 9
    return z, "synthetic teacher-like logits"


def _write(path, images, classes, epochs, codec, cache_dir, q):
    rng = np.random.default_rng(0)
    pool, source = logit_pool(classes, rng, cache_dir)
    if codec.startswith("lowrank"):
        from labelstore import parse_codec_spec

        c = parse_codec_spec(codec, classes).fit(pool[:4096])
    else:
        c = codec
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    w = LabelWriter(path, num_classes=classes, num_images=images, codec=c, seed=1, image_sizes=(224, 224))
    fetch = 0.0
    pos = 0
    for e in range(epochs):
        w.begin_epoch(e, BATCH)
        for b in range(w.num_batches(e)):
            n = len(w.batch_indices(e, b))
            f0 = time.perf_counter()
            idx = (pos + np.arange(n)) % len(pool)
            logits = pool[idx]
            pos += n
            fetch += time.perf_counter() - f0
            w.write_batch(e, b, logits)
    t1 = time.perf_counter()
    w.finalize()
    t2 = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the logit pool stands in for the teacher: the writer's own memory is what it adds
    q.put({"source": source, "write_s": t1 - t0 - fetch, "finalize_s": t2 - t1,
           "peak_rss_mb": peak, "writer_added_rss_mb": peak - rss_before})


def _read(path, reads, q):
    rng = np.random.default_rng(1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    with LabelFile(path) as f:
        open_s = time.perf_counter() - t0
        keys = [(int(rng.integers(f.num_epochs)), 0) for _ in range(reads)]
        keys = [(e, int(rng.integers(f.num_batches(e)))) for e, _ in keys]
        t0 = time.perf_counter()
        for e, b in keys:
            f.read_batch(e, b)
        random_ms = (time.perf_counter() - t0) / len(keys) * 1e3
        t0 = time.perf_counter()
        n = 0
        for e in range(min(f.num_epochs, 3)):
            for b in range(f.num_batches(e)):
                n += len(f.read_logits(e, b))
        seq_rps = n / (time.perf_counter() - t0)
    q.put({"open_ms": open_s * 1e3, "random_batch_ms": random_ms, "sequential_records_per_s": seq_rps,
           "reader_rss_start_mb": rss0, "reader_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _in_child(fn, *args) -> dict:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def measure(tmp: Path, name: str, images: int, classes: int, epochs: int, codec: str,
            cache_dir: Path | None = None, reads: int = 300) -> dict:
    path = tmp / f"{name}.h5"
    w = _in_child(_write, path, images, classes, epochs, codec, cache_dir)
    r = _in_child(_read, path, reads)
    records = images * epochs
    size = path.stat().st_size
    path.unlink()
    row = {"set": name, "images": images, "classes": classes, "epochs": epochs, "records": records, "codec": codec,
           "bytes": size, "bytes_per_record": size / records,
           "write_records_per_s": records / w["write_s"], **w, **r}
    print(f"{name:<34} {codec:<22} {records:>10,} rec  {size / 1e6:9.1f} MB  {size / records:6.2f} B/rec  "
          f"write {row['write_records_per_s']:>9,.0f} rec/s  finalize {w['finalize_s']:5.1f} s  "
          f"read {r['random_batch_ms']:5.2f} ms/batch  writer +{w['writer_added_rss_mb']:4.0f} MB  reader {r['reader_peak_rss_mb']:5.0f} MB",
          flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 epochs instead of 300, the 21K-P epoch at 1/10, 60 random batch reads instead of 300")
    ap.add_argument("--codecs", default="topk:k=10|lowrank:rank=8|lowrank:rank=128,k=5|dense_q:bits=8",
                    help="'|'-separated codec specs")
    ap.add_argument("--out", default="results/scale")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="teacher-logit cache of benchmarks.codec_fidelity (default $LABELSTORE_BENCH_CACHE or results/teacher_logits)")
    args = ap.parse_args(argv)
    codecs = args.codecs.split("|")
    # --quick: keeps the smoke run (and the test that runs it) under a minute on 2 busy cores
    epochs, reads = (10, 60) if args.quick else (300, 300)
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as d:
        tmp = Path(d)
        for codec in codecs:
            rows.append(measure(tmp, "in1k_ipc10", 10_000, 1000, epochs, codec, args.cache_dir, reads))
        # 21K-P: one epoch (a tenth with --quick); a second epoch would cost the same again
        n21 = 10_450 if args.quick else 104_500
        for codec in ("topk:k=10", "dense_q:bits=8"):
            rows.append(measure(tmp, "in21k_ipc10_1epoch", n21, 10_450, 1, codec, reads=reads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(rows, indent=1))

    print("\nextrapolated to the full sets (bytes and write time scale with records; reader memory does not):")
    for name, images, classes, ep, sre2l_bytes in TARGETS:
        key = "in21k_ipc10_1epoch" if classes > 1000 else "in1k_ipc10"
        for row in (r for r in rows if r["set"] == key):
            records = images * ep
            size = row["bytes_per_record"] * records
            hours = records / row["write_records_per_s"] / 3600
            print(f"  {name:<33} {row['codec']:<22} {size / 1e9:8.2f} GB  ({sre2l_bytes / size:6.0f}x smaller than SRe2L's "
                  f"{sre2l_bytes / 1e9:.2f} GB)  write {hours * 60:7.1f} min on one core  reader {row['reader_peak_rss_mb']:.0f} MB")
    print(f"JSON in {out / 'scale.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
