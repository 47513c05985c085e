"""The CSV tables the stages write beside their outputs (squeeze's and train's metrics.csv,
recover's losses.csv, the demo's results.csv): one row per dict, the columns of the first."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["write_csv"]


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write `rows` to `path` with a header row (the keys of the first row); returns the path."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
