"""Packing throughput: records/s and peak memory of `labelstore pack` on a generated SRe2L-layout
input (1,000,000 records at 1000 classes by default; --quick: 20,000).

The input is written with SRe2L's own torch.save list per batch (fp16 logits) into a temp
folder that is deleted afterwards. Peak memory is the process's ru_maxrss after packing,
with the generation done in a child process so it does not count.

    .venv/bin/python benchmarks/pack_throughput.py [--quick] [--codec dense16]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path


def generate(root: str, records: int, classes: int, batch_size: int, images: int) -> None:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    epochs = records // images
    nb = -(-images // batch_size)
    for e in range(epochs):
        d = Path(root) / f"epoch_{e}"
        d.mkdir(parents=True)
        for b in range(nb):
            n = min(batch_size, images - b * batch_size)
            z = rng.normal(0, 2, (n, classes)).astype(np.float32)
            z[np.arange(n), rng.integers(0, classes, n)] += 8
            coords = torch.from_numpy(np.c_[rng.uniform(0, 0.5, (n, 2)), rng.uniform(0.3, 0.5, (n, 2))].astype(np.float32))
            lam = float(rng.beta(1, 1))
            torch.save([coords, torch.from_numpy(rng.random(n) < 0.5), torch.randperm(n), lam,
                        [np.int64(10), np.int64(20), np.int64(100), np.int64(120)], torch.from_numpy(z).half()], d / f"batch_{b}.tar")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20,000 records instead of 1,000,000")
    ap.add_argument("--records", type=int)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--images", type=int, default=10_000, help="images per epoch (IPC10 on ImageNet-1K)")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--codec", default="dense16")
    ap.add_argument("--out", default="results/pack_throughput")
    args = ap.parse_args(argv)
    records = args.records or (20_000 if args.quick else 1_000_000)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pack_bench_"))
    try:
        src = tmp / "src"
        t0 = time.perf_counter()
        p = mp.get_context("spawn").Process(target=generate, args=(str(src), records, args.classes, args.batch_size, args.images))
        p.start()
        p.join()
        gen_s = time.perf_counter() - t0
        in_bytes = sum(f.stat().st_size for f in src.rglob("*.tar"))
        from labelstore.pack import pack

        t0 = time.perf_counter()
        res = pack(src, tmp / "labels.h5", codec=args.codec, progress=False, log=lambda m: None)
        secs = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        row = {"records": res.records, "classes": args.classes, "batch_size": args.batch_size, "codec": args.codec,
               "input_bytes": in_bytes, "output_bytes": res.file_bytes, "seconds": round(secs, 2),
               "records_per_s": round(res.records / secs), "input_MB_per_s": round(in_bytes / secs / 1e6, 1),
               "peak_rss_MB": round(peak / 1e6), "generate_seconds": round(gen_s, 1)}
        print(json.dumps(row, indent=1))
        with open(out / f"pack_{records}_{args.codec.replace(':', '_')}.json", "w") as fh:
            json.dump(row, fh, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
