"""The ``labelstore`` command line: inspect and verify label files (pack, budget, export: see docs/cli.md).

Exit codes, the same for every subcommand here and of ``distill`` (both go through
:func:`run_command`): 0 ok; 1 a check that ran and failed (verify found damage, nothing fits
the budget); 2 a usage or input error (a missing or unreadable file, a bad codec spec), with
a one-line reason on stderr; 3 an internal error (a bug: the traceback is printed); 130
interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from .errors import LabelStoreError, describe_ranges

_COMMANDS = {}


def command(name: str, help: str):
    def deco(fn):
        _COMMANDS[name] = (fn, help)
        return fn

    return deco


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n}"


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--drift", metavar="LABELS.npy", help="also report HALD's local semantic drift against these image classes")


@command("inspect", "what a label file holds and where its bytes go")
def cmd_inspect(args) -> int:
    from .reader import LabelFile

    with LabelFile(args.file) as f:
        sizes = f.byte_breakdown
        total = sum(sizes.values())
        info = {
            "file": str(f.path),
            "format_version": f.format_version,
            "classes": f.num_classes,
            "images": f.num_images,
            "epochs": f.num_epochs,
            "partial_epochs": {str(e): {"stored_batches": describe_ranges(f.stored_batches(e)), "of": f.num_batches(e)}
                               for e in range(f.num_epochs) if not f.is_complete(e)},
            "batch_sizes": sorted({f.batch_size(e) for e in range(f.num_epochs)}),
            "records": f.num_records,
            "seed": f.seed,
            "codec": f.codec.get_config(),
            "crops": f.crops_mode,
            "orders": f.orders_mode,
            "mix": f.mix_mode,
            "crop_policy": f.crop_policy.to_dict(),
            "mix_policy": f.mix_policy.to_dict(),
            "order_source": f.user_attrs.get("order_source", "derived from the seed" if f.orders_mode == "derived" else None),
            "pixels": f.pixels,
            "user_attrs": f.user_attrs,
            "source": f.source if f.source == "logits" else f"probabilities at T={f.source_temperature:g}",
            "image_fingerprint": f.image_fingerprint,
            "teacher": f.teacher,
            "bytes": {"total": total, **sizes},
            "bytes_per_record": total / max(f.num_records, 1),
        }
    if args.json:
        print(json.dumps(info, indent=1))
        return _inspect_drift(args)
    codec = info["codec"]
    params = ", ".join(f"{k}={v}" for k, v in codec.items() if k not in ("id", "num_classes"))
    print(f"file       {info['file']}  (format v{info['format_version']})")
    print(f"classes    {info['classes']}")
    print(f"images     {info['images']}  fingerprint {info['image_fingerprint'] or '(none)'}")
    print(f"epochs     {info['epochs']}  batch size {', '.join(map(str, info['batch_sizes']))}")
    for e, p in info["partial_epochs"].items():
        print(f"  epoch {e} is partial: batches {p['stored_batches']} of 0..{p['of'] - 1} stored")
    print(f"records    {info['records']}  seed {info['seed']}")
    print(f"codec      {codec['id']}{f' ({params})' if params else ''}; labels are {info['source']}")
    print(f"crops      {info['crops']}; orders {info['orders']}; mix {info['mix']}")
    print(f"crop       {json.dumps(info['crop_policy'], sort_keys=True)}")
    print(f"mixing     {json.dumps(info['mix_policy'], sort_keys=True)}")
    if info["order_source"]:
        print(f"order      {info['order_source']}")
    if info["pixels"]:
        print(f"pixels     {json.dumps(info['pixels'], sort_keys=True)}")
    attrs = {k: v for k, v in info["user_attrs"].items() if k != "order_source"}
    if attrs:
        print(f"attrs      {json.dumps(attrs, sort_keys=True)[:300]}")
    if info["teacher"]:
        print(f"teacher    {json.dumps(info['teacher'])}")
    print(f"bytes      {_human(total)} in all, {info['bytes_per_record']:.2f} per record")
    for k in ("labels", "crops", "mix", "orders", "metadata"):
        print(f"  {k:<9}{_human(sizes[k]):>12}  {100 * sizes[k] / max(total, 1):5.1f}%  {sizes[k] / max(f.num_records, 1):9.2f} B/record")
    return _inspect_drift(args)


def _inspect_drift(args) -> int:
    if not args.drift:
        return 0
    from .cli_drift import run

    return run(argparse.Namespace(file=args.file, classes=args.drift, temperature=1.0, plot=None, json=args.json))


def _verify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--quiet", action="store_true", help="print problems only")


@command("verify", "check every checksum and chunk of a label file; exit 1 if anything is wrong")
def cmd_verify(args) -> int:
    from .verify import verify_file

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

    from ._format import SUPPORTED_VERSIONS, USERBLOCK_DTYPE, USERBLOCK_MAGIC

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


_ARGS = {"inspect": _inspect_args, "verify": _verify_args}


def register(name: str, help: str, add_args, run) -> None:
    """Let other labelstore modules (pack, budget, export, …) add a subcommand."""
    _COMMANDS[name] = (run, help)
    _ARGS[name] = add_args


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="labelstore", description="Per-crop soft-label files: " + ", ".join(_COMMANDS) + ".")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('labelstore').__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help) in _COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        _ARGS[name](p)
    return parser


def _load_plugins() -> None:
    import importlib

    for mod in ("pack", "budget", "export", "merge", "drift"):
        try:
            importlib.import_module(f"labelstore.cli_{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"labelstore.cli_{mod}":
                raise


EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def run_command(prog: str, command: str, run, args) -> int:
    """Run a subcommand with the exit codes of docs/cli.md: a LabelStoreError becomes its
    one-line message and exit 2 (or the error's ``exit_code``, 1 for a check that failed).

    Shared with the ``distill`` command line, so both tools fail the same way.
    """
    try:
        return run(args)
    except LabelStoreError as exc:
        print(f"{prog} {command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", EXIT_USAGE))
    except KeyboardInterrupt:
        print(f"{prog} {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.filename is None:
            return _bug(prog, command)
        # a file the command was pointed at (or told to write) that the OS refuses: input error
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(f"{prog} {command}: error: {where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:
        # Python would exit 1 here, which reads as "a check failed": a crash gets its own code
        return _bug(prog, command)


def _bug(prog: str, command: str) -> int:
    traceback.print_exc()
    print(f"{prog} {command}: internal error (a bug in labelstore-kit: please report it with the traceback above)",
          file=sys.stderr)
    return EXIT_BUG


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("labelstore", args.command, _COMMANDS[args.command][0], args)


if __name__ == "__main__":
    # run as `python -m labelstore.cli`: plugins register into labelstore.cli, not __main__
    from labelstore.cli import main as _main

    sys.exit(_main())
