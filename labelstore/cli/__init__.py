"""The ``labelstore`` command line (docs/cli.md): one module per subcommand, one explicit table.

Each command module has ``HELP``, ``add_args(parser)`` and ``run(args) -> exit code``, and
imports its heavy dependencies inside ``run``, so ``labelstore --help`` stays fast.

Exit codes, the same for every subcommand here and of ``distill`` (both go through
:func:`run_command`): 0 ok; 1 a check that ran and failed (verify found damage, nothing fits
the budget); 2 a usage or input error (a missing or unreadable file, a bad codec spec), with
a one-line reason on stderr; 3 an internal error (a bug: the traceback is printed); 130
interrupted.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from .._format import LABELSTORE_VERSION
from ..errors import LabelStoreError
from . import budget, drift, export, inspect, merge, pack, verify

COMMANDS = {
    "inspect": inspect,
    "verify": verify,
    "pack": pack,
    "export": export,
    "budget": budget,
    "drift": drift,
    "merge": merge,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelstore", description="Per-crop soft-label files: " + ", ".join(COMMANDS) + ".")
    parser.add_argument("--version", action="version", version=f"%(prog)s {LABELSTORE_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in COMMANDS.items():
        mod.add_args(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    return parser


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
    return run_command("labelstore", args.command, COMMANDS[args.command].run, args)
