"""Markdown tables of a storage benchmark results.csv (benchmarks/storage_vs_accuracy.py), as
docs/benchmarks.md shows them: per image set, one row per stored-epoch count S, one column per
schedule [recipe], each cell mean ± std over seeds (n seeds), the best cell of a row in bold.

    python scripts/sva_tables.py results/recipes/results.csv [--columns "all-soft" "HALD [hald]" ...]
        [--sources real sre2l] [--S 1 2 5 20 300] [--diff "HALD [hald]" "HALD"]

`--diff A B` adds a column A − B (difference of the means, and the pooled standard error).
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics as st
from collections import defaultdict


def label(schedule: str, recipe: str) -> str:
    return schedule if recipe in ("", "labelstore") else f"{schedule} [{recipe}]"


def load(path: str) -> dict[tuple[str, str, int], list[float]]:
    cells = defaultdict(list)
    for r in csv.DictReader(open(path)):
        if r["teacher"] != "single" or r["codec"] != "dense16":
            continue
        cells[(r["source"], label(r["schedule"], r.get("recipe") or ""), int(r["S"]))].append(100 * float(r["test_acc"]))
    return cells


def cell(v: list[float] | None) -> str:
    if not v:
        return ""
    sd = st.stdev(v) if len(v) > 1 else 0.0
    return f"{st.mean(v):.2f} ± {sd:.1f} ({len(v)})"


def diff(a: list[float] | None, b: list[float] | None) -> str:
    if not a or not b:
        return ""
    se = math.sqrt((st.variance(a) / len(a) if len(a) > 1 else 0) + (st.variance(b) / len(b) if len(b) > 1 else 0))
    return f"{st.mean(a) - st.mean(b):+.2f} ± {se:.1f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--columns", nargs="+", default=None, help="schedule [recipe] labels (default: all, sorted)")
    p.add_argument("--sources", nargs="+", default=None)
    p.add_argument("--S", nargs="+", type=int, default=None)
    p.add_argument("--diff", nargs=2, action="append", default=[], metavar=("A", "B"))
    a = p.parse_args(argv)
    cells = load(a.results)
    sources = a.sources or sorted({k[0] for k in cells})
    for source in sources:
        cols = a.columns or sorted({k[1] for k in cells if k[0] == source})
        Ss = a.S or sorted({k[2] for k in cells if k[0] == source})
        print(f"\n{source}:\n")
        print("| S | " + " | ".join(cols + [f"{x} − {y}" for x, y in a.diff]) + " |")
        print("|---:|" + "---:|" * (len(cols) + len(a.diff)))
        for S in Ss:
            vals = [cells.get((source, c, S)) for c in cols]
            best = max((st.mean(v) for v in vals if v), default=None)
            texts = [(f"**{cell(v)}**" if v and st.mean(v) == best else cell(v)) for v in vals]
            texts += [diff(cells.get((source, x, S)), cells.get((source, y, S))) for x, y in a.diff]
            print(f"| {S} | " + " | ".join(texts) + " |")


if __name__ == "__main__":
    main()
