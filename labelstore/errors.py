"""The one exception type a user of labelstore-kit ever needs to catch."""


class LabelStoreError(Exception):
    """Something the user can fix: the message says what is wrong and what to do.

    ``exit_code`` is what the command lines exit with: 2, a usage or input error.
    """

    exit_code = 2


class CheckFailed(LabelStoreError):
    """A check that ran and failed (nothing fits the budget, damage found): exit code 1."""

    exit_code = 1


def describe_ranges(xs) -> str:
    """[0, 1, 2, 5] -> '0..2, 5': sets of batch or epoch indices in messages."""
    xs = [int(x) for x in xs]
    out, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            out.append(str(start) if start == x else f"{start}..{x}")
            start = None
    return ", ".join(out) or "none"
