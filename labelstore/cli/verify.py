"""``labelstore verify FILE``: every checksum and chunk; exit 1 if anything is wrong, 2 if it is not a label file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import LabelStoreError

HELP = "check every checksum and chunk of a label file; exit 1 if anything is wrong"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--quiet", action="store_true", help="print problems only")


def run(args) -> int:
    from ..verify import verify_file

    _check_is_label_file(args.file)
    report = verify_file(args.file, progress=not args.quiet and sys.stderr.isatty())
    for p in report.problems:
        print(f"BAD  {p}")
    if report.ok:
        if not args.quiet:
            print(f"OK   {args.file}: {report.chunks_checked} chunks, {report.records_checked} records, all checksums match")
        return 0
    print(f"{args.file}: {len(report.problems)} problem(s) found", file=sys.stderr)
    return 1


def _check_is_label_file(path: str) -> None:
    """LabelStoreError (exit 2) unless ``path`` is a readable file that starts as a label file.

    verify's exit 1 means "this label file is damaged"; a wrong path, a folder, a file without
    permission or another format altogether is an input error, so it is refused here first.
    Damage past the signature (truncation, flipped bits, a broken header) is left to verify.
    """
    import numpy as np

    from .._format import SUPPORTED_VERSIONS, USERBLOCK_DTYPE, USERBLOCK_MAGIC

    p = Path(path)
    if not p.exists():
        if Path(f"{p}.partial").exists():
            raise LabelStoreError(f"{p} is not finalized yet ({p}.partial holds an unfinished write): "
                                  "resume the writer and finalize it, then verify")
        raise LabelStoreError(f"no label file at {p}; check the path")
    if p.is_dir():
        raise LabelStoreError(f"{p} is a folder, not a label file; give the .h5 file")
    try:
        with open(p, "rb") as fh:
            head = fh.read(USERBLOCK_DTYPE.itemsize)
    except OSError as exc:
        raise LabelStoreError(f"cannot read {p}: {exc.strerror}; check its permissions") from None
    if head[: len(USERBLOCK_MAGIC)] != USERBLOCK_MAGIC:
        raise LabelStoreError(f"{p} is not a labelstore label file (it does not start with the label-file "
                              "signature); give a file written by labelstore")
    if len(head) == USERBLOCK_DTYPE.itemsize:
        version = int(np.frombuffer(head, USERBLOCK_DTYPE)[0]["version"])
        if version not in SUPPORTED_VERSIONS:
            raise LabelStoreError(f"{p} has format version {version}; this labelstore-kit reads "
                                  f"{list(SUPPORTED_VERSIONS)}: upgrade labelstore-kit to verify it")
