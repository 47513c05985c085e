"""``labelstore export FILE --to sre2l OUTDIR``: write a label file back as SRe2L batch files."""
from __future__ import annotations

import argparse
import sys

HELP = "write a label file back as SRe2L's per-batch torch.save files"


def add_args(p: argparse.ArgumentParser) -> None:
    from .args import image_size_arg

    p.add_argument("file", help="label file")
    p.add_argument("--to", required=True, choices=["sre2l"], help="target layout (sre2l: epoch_<e>/batch_<b>.tar)")
    p.add_argument("outdir", help="empty folder to write into")
    p.add_argument("--image-size", type=image_size_arg, help="image size for the normalised coords (default: the file's)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2) when the file's orders are not SRe2L's "
                                                          "RandomSampler(seed 42) orders, which unmodified SRe2L code assumes")
    p.add_argument("--quiet", action="store_true")


def run(args) -> int:
    from ..export import export_sre2l

    n = export_sre2l(args.file, args.outdir, image_size=args.image_size, overwrite=args.force, strict=args.strict,
                     progress=not args.quiet and sys.stderr.isatty(), log=lambda m: print(m, file=sys.stderr))
    print(f"wrote {n} batch files (SRe2L layout) and sampler_indices_epoch.json to {args.outdir}")
    return 0
