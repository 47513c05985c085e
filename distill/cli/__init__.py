"""The `distill` command: squeeze | recover | relabel | train | evaluate | demo.

One module per subcommand (`distill/cli/<verb>.py`: HELP, add_args, run), the command table
below, shared argument helpers in `cli/args.py`. Each subcommand fills its stage's config
dataclass from the command line, runs the stage and prints where the outputs went; the
resolved config is written beside every output.

Only the verb being run is imported (its stage module and torch): ``distill --help`` and
``distill --version`` import neither. Every option's help shows its default. A stage whose
optional dependencies are missing ends with one line naming the install command.
"""

from __future__ import annotations

import argparse
import sys

from distill.cli import demo, evaluate, recover, relabel, squeeze, train
from distill.cli.args import HelpFormatter as _HelpFormatter  # the name the install tests know it by

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {
    "squeeze": squeeze,
    "recover": recover,
    "relabel": relabel,
    "train": train,
    "evaluate": evaluate,
    "demo": demo,
}


class _Version(argparse.Action):
    """``--version``, imported only when asked (labelstore's import is not free)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version of labelstore-kit and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from labelstore import __version__

        print(f"distill (labelstore-kit) {__version__}")
        parser.exit()


def _verb(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the top level takes no option with a value)."""
    for tok in argv:
        if not tok.startswith("-"):
            return tok if tok in COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``distill`` parser. With ``argv``, only the verb it names gets its options (and its
    stage module imported): the top-level help then costs no torch import."""
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reference dataset-distillation pipeline: squeeze -> recover -> relabel -> train, evaluate, demo.",
        epilog="`distill <command> --help` lists a command's options with their defaults.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    only = _verb(argv) if argv is not None else None
    for name, mod in COMMANDS.items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, formatter_class=_HelpFormatter)
        if argv is None or name == only:
            mod.add_args(p)
    return parser


def _missing(exc: BaseException):
    """The one-line MissingExtra for an optional dependency a command lacks, else None.

    torch, torchvision, Pillow and matplotlib are what every stage needs: the ``distill`` extra."""
    from labelstore.extras import EXTRA_OF, missing_extra

    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = "distill" if EXTRA_OF.get(name) in ("loaders", "plot") else None
    return missing_extra(exc, "this command", extra)


def _guarded(run):
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ModuleNotFoundError as exc:
            err = _missing(exc)
            if err is None:
                raise
            raise err from None

    return wrapper


def main(argv: list[str] | None = None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
    except ModuleNotFoundError as exc:  # the verb's stage module needs an extra that is not installed
        err = _missing(exc)
        if err is None:
            raise
        print(f"distill {_verb(argv)}: error: {err}", file=sys.stderr)
        return int(err.exit_code)
    args = parser.parse_args(argv)

    from labelstore.cli import run_command

    def _show(message, category, *_, **__) -> None:  # one line, like errors, not a source-code excerpt
        text = str(message).removeprefix(f"{args.command}: ")
        print(f"distill {args.command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = _show
        return run_command("distill", args.command, _guarded(COMMANDS[args.command].run), args)
