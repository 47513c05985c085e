"""``labelstore drift FILE --classes LABELS.npy``: HALD's local semantic drift of a label file."""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..errors import LabelStoreError

HELP = "HALD's local semantic drift: top-1 vs image class, soft-label spread across crops"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--classes", required=True, help=".npy of each image's class (N,)")
    p.add_argument("--temperature", "-T", type=float, default=1.0, help="softmax temperature for the spread (default 1)")
    p.add_argument("--plot", help="write histograms to this PNG (needs matplotlib: the plot extra)")
    p.add_argument("--json", action="store_true")


def run(args) -> int:
    from ..drift import drift_report

    if args.plot:  # before the file is read: a missing matplotlib is one line, not a traceback at the end
        from ..extras import require

        require("matplotlib", "--plot (histograms)")

    try:
        classes = np.load(args.classes, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise LabelStoreError(f"cannot read --classes {args.classes} ({exc}); give an .npy of integer classes") from None
    rep = drift_report(args.file, classes, T=args.temperature, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps({"records": rep.records, "mismatch": rep.mismatch, "mismatch_not_partner": rep.mismatch_unmixed_partner,
                          "spread_mean": float(rep.spread.mean()), "temperature": rep.temperature,
                          "per_class_mismatch": rep.per_class_mismatch.tolist()}, indent=1))
    else:
        print(rep.summary())
    if args.plot:
        print(f"histograms: {rep.plot(args.plot)}")
    return 0
