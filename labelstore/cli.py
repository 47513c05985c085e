"""The ``labelstore`` command line: inspect and verify label files (pack, budget, export: see docs/cli.md).

Exit codes: 0 ok; 1 the file has problems (verify); 2 bad usage or a file that cannot be
read, with a one-line reason on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import LabelStoreError

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
            "batch_sizes": sorted({f.batch_size(e) for e in range(f.num_epochs)}),
            "records": f.num_records,
            "codec": f.codec.get_config(),
            "crops": f.crops_mode,
            "orders": f.orders_mode,
            "mix": f.mix_mode,
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
    print(f"records    {info['records']}")
    print(f"codec      {codec['id']}{f' ({params})' if params else ''}; labels are {info['source']}")
    print(f"crops      {info['crops']}; orders {info['orders']}; mix {info['mix']}")
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

    report = verify_file(args.file, progress=not args.quiet and sys.stderr.isatty())
    for p in report.problems:
        print(f"BAD  {p}")
    if report.ok:
        if not args.quiet:
            print(f"OK   {args.file}: {report.chunks_checked} chunks, {report.records_checked} records, all checksums match")
        return 0
    print(f"{args.file}: {len(report.problems)} problem(s) found", file=sys.stderr)
    return 1


_ARGS = {"inspect": _inspect_args, "verify": _verify_args}


def register(name: str, help: str, add_args, run) -> None:
    """Let other labelstore modules (pack, budget, export, …) add a subcommand."""
    _COMMANDS[name] = (run, help)
    _ARGS[name] = add_args


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="labelstore", description="Per-crop soft-label files: inspect, verify, pack, budget.")
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


def run_command(prog: str, command: str, run, args) -> int:
    """Run a subcommand; a LabelStoreError becomes its one-line message and exit code 2.

    Shared with the ``distill`` command line, so both tools fail the same way.
    """
    try:
        return run(args)
    except LabelStoreError as exc:
        print(f"{prog} {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {command}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("labelstore", args.command, _COMMANDS[args.command][0], args)


if __name__ == "__main__":
    # run as `python -m labelstore.cli`: plugins register into labelstore.cli, not __main__
    from labelstore.cli import main as _main

    sys.exit(_main())
