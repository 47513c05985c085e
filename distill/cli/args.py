"""Argument helpers shared by the ``distill`` subcommands (none of them imports torch)."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["HelpFormatter", "add_common", "config_fields", "crop_scale", "is_main"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option whose help does not already say its default;
    lists as space-separated words (as typed); flags (store_true/false) and None defaults,
    whose meaning the help text spells out, get nothing appended."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text.lower() or not action.option_strings or d is None or d is argparse.SUPPRESS
                or isinstance(d, bool)):
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def add_common(p: argparse.ArgumentParser, threads: int | None = None) -> None:
    """--seed, --device, --threads, --quiet: what every stage but evaluate takes alike."""
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=threads,
                   help="torch CPU threads" + (" (default: torch's own choice)" if threads is None else ""))
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_fields(cls, args: argparse.Namespace) -> dict:
    """The parsed options that are fields of the config dataclass `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def crop_scale(args: argparse.Namespace) -> None:
    """--crop-scale MIN MAX as the tuple the configs hold."""
    if args.crop_scale is not None:
        args.crop_scale = tuple(args.crop_scale)


def is_main() -> bool:
    """True on rank 0 (or in one process): under torchrun, rank 0 reports."""
    from distill.distributed import is_main_process

    return is_main_process()
