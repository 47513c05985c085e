"""Check a label file end to end and name every problem found."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._build import file_crc32
from ._format import EXPLICIT, USERBLOCK_DTYPE
from .errors import LabelStoreError


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    chunks_checked: int = 0
    records_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_file(path: str | Path, progress: bool = False) -> VerifyReport:
    """Whole-file checksum, metadata, every chunk (checksum and decode), orders and sizes."""
    from .reader import LabelFile

    report = VerifyReport(Path(path))
    try:
        f = LabelFile(path)
    except LabelStoreError as exc:
        report.problems.append(str(exc))
        return report
    with f:
        with open(path, "rb") as fh:
            crc = file_crc32(fh, fh.read(USERBLOCK_DTYPE.itemsize)[:-4])
        if crc != f.file_crc32:
            report.problems.append("whole-file checksum mismatch: some bytes of the file changed since it was written")
        try:
            if f.orders_mode == EXPLICIT:
                for e in range(f.num_epochs):
                    if not np.array_equal(np.sort(f.order(e)), np.arange(f.num_images)):
                        report.problems.append(f"epoch {e}: stored order is not a permutation of the images")
            if f.image_sizes is not None and (f.image_sizes < 1).any():
                report.problems.append("image_sizes holds non-positive sizes")
        except Exception as exc:  # h5py's fletcher32 check fails with OSError or RuntimeError
            report.problems.append(f"orders or image sizes are corrupted ({exc})")
        keys = [(int(e), int(b)) for e, b in f.stored_batches()]
        if progress:
            from tqdm import tqdm

            keys = tqdm(keys, desc="verify", unit="batch")
        for e, b in keys:
            try:
                batch = f.read_batch(e, b)
                if not np.isfinite(batch.logits).all():
                    raise LabelStoreError("decoded logits are not finite")
                report.records_checked += len(batch)
            except LabelStoreError as exc:
                msg = str(exc)
                report.problems.append(msg if f"epoch {e} batch {b}" in msg else f"epoch {e} batch {b}: {msg}")
            report.chunks_checked += 1
    return report
