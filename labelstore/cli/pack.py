"""``labelstore pack SRC OUT``: import an SRe2L / LPLD / CV-DD / HALD / FKD label set or plain
arrays into one label file (see docs/cli.md)."""
from __future__ import annotations

import argparse
import sys

from ..importers import LAYOUTS
from ..importers.orders import ORDER_CHOICES
from .args import image_size_arg

HELP = "import SRe2L / LPLD / CV-DD / HALD / FKD labels or arrays into one label file"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source folder (or one arrays file)")
    p.add_argument("out", help="label file to write (.h5)")
    p.add_argument("--from", dest="layout", choices=LAYOUTS, help="force the source layout (default: detected)")
    p.add_argument("--codec", help="codec spec, e.g. dense16, dense_q:bits=8, topk:k=10 (default dense16; with --budget: plan with this codec only)")
    p.add_argument("--budget", help="largest file size allowed, e.g. 285MB: picks codec and stored epochs (see `labelstore budget`)")
    p.add_argument("--num-classes", type=int, help="class count (checked against the files; FKD: default = class folders)")
    p.add_argument("--images", help="the image set the labels belong to (.npy/.npz of uint8 images, .beton, or an image folder): "
                                    "its image count, sizes and fingerprint are used and checked")
    p.add_argument("--num-images", type=int, help="how many images the labels cover, when the files cannot prove it "
                                                  "(e.g. every batch file is full) and no --images or order file is given")
    p.add_argument("--image-size", type=image_size_arg, help="size the images had at relabel time: 224, HxW, or sizes.npy (N, 2); default 224 (FKD: required)")
    p.add_argument("--fingerprint", help="image-set fingerprint 'sha256:…', or an .npy of the uint8 images to fingerprint")
    p.add_argument("--batch-size", type=int, help="records per stored batch for FKD and arrays sources (default 256 / whole set)")
    p.add_argument("--order", default="auto", choices=ORDER_CHOICES, help="sample order when the source does not store it (default: the codebase's own)")
    p.add_argument("--order-from", help="per-epoch orders: LPLD .json, HALD .pt or .npy (E, N)")
    p.add_argument("--source-temperature", type=float, help="temperature of stored probabilities (HALD default 20, FKD default 1)")
    p.add_argument("--skip-bad", action="store_true", help="leave out epochs with missing or unreadable files and report them")
    p.add_argument("--trust-pickles", action="store_true", help="allow full unpickling (runs code inside the files: only for files you made)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from ..pack import pack

    res = pack(args.src, args.out, layout=args.layout, codec=args.codec, budget=args.budget, num_classes=args.num_classes,
               num_images=args.num_images, images=args.images, image_size=args.image_size, fingerprint=args.fingerprint, batch_size=args.batch_size, order=args.order,
               order_from=args.order_from, source_temperature=args.source_temperature, skip_bad=args.skip_bad,
               allow_pickle=args.trust_pickles, progress=not args.quiet and sys.stderr.isatty(), overwrite=args.force)
    for note in res.notes:
        print(f"note: {note}")
    for s in res.skipped:
        print(f"skipped: {s}")
    if res.skipped:
        print(f"left out {len(res.skipped)} unreadable or missing part(s) (--skip-bad); the file holds what is listed below")
    params = ", ".join(f"{k}={v}" for k, v in res.codec.items() if k not in ("id", "num_classes"))
    print(f"packed {res.layout} -> {res.path}: {res.records:,} records, {res.stored_epochs} epoch{'s' if res.stored_epochs != 1 else ''} "
          f"(source epochs {_ranges(res.source_epochs)}), codec {res.codec['id']}{f' ({params})' if params else ''}, "
          f"{res.file_bytes:,} bytes ({res.file_bytes / max(res.records, 1):.1f} B/record)")
    if res.plan is not None:
        c = res.plan.chosen
        print(f"budget {res.plan.budget:,} B: predicted {c.predicted_bytes:,} B, wrote {res.file_bytes:,} B "
              f"({100 * (res.file_bytes - c.predicted_bytes) / c.predicted_bytes:+.1f}%)")
    return 0


def _ranges(xs: list[int]) -> str:
    if not xs:
        return "none"
    if xs == list(range(xs[0], xs[-1] + 1)):
        return f"{xs[0]}..{xs[-1]}" if len(xs) > 1 else str(xs[0])
    return ",".join(map(str, xs))
