"""Local semantic drift (HALD) measured on a label file: how often a crop's soft label points
away from its image's class, and how much an image's soft labels spread across its crops.

Spread is HALD's analysis measure: the trace of the covariance of ``softmax(logits / T)``
across the stored crops of one image, ``E||p||^2 - ||E p||^2``. Memory: one running mean of
``(images, classes)`` float64 plus per-image scalars; the file is read batch by batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import LabelStoreError
from .batch import softmax
from .reader import LabelFile


@dataclass
class DriftReport:
    records: int
    mismatch: float  # fraction of records whose top-1 class differs from the image's class
    mismatch_unmixed_partner: float  # ... and from the CutMix/Mixup partner's class too
    per_class_mismatch: np.ndarray  # (C,)
    spread: np.ndarray  # (N,) Tr(Cov) of an image's soft labels across its crops
    temperature: float
    per_class_spread: np.ndarray = field(default=None)
    per_class_records: np.ndarray = field(default=None)  # (C,) records per class; None: not counted

    def _present(self) -> np.ndarray:
        """Classes with stored records (a 100-class subset of ImageNet leaves 900 without any)."""
        if self.per_class_records is None:
            return np.arange(len(self.per_class_mismatch))
        return np.flatnonzero(self.per_class_records > 0)

    def summary(self) -> str:
        present = self._present()
        worst = present[np.argsort(-self.per_class_mismatch[present], kind="stable")[:5]]
        return "\n".join([
            f"records            {self.records:,}",
            f"top-1 != class     {100 * self.mismatch:.2f}%  (neither own nor mix partner's class: {100 * self.mismatch_unmixed_partner:.2f}%)",
            f"spread Tr(Cov)     mean {self.spread.mean():.3e}, median {np.median(self.spread):.3e}, max {self.spread.max():.3e} at T={self.temperature:g}",
            "worst classes      " + ", ".join(f"{c}: {100 * self.per_class_mismatch[c]:.1f}%" for c in worst),
        ])

    def plot(self, path: str | Path) -> Path:
        """Histograms of per-image spread and per-class mismatch, as a PNG (needs matplotlib:
        the ``plot`` extra; without it, a :class:`~labelstore.extras.MissingExtra`)."""
        from .extras import require

        require("matplotlib", "drift histograms (--plot)").use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        ax[0].hist(self.spread, bins=50, color="tab:blue")
        ax[0].set(title=f"soft-label spread per image (T={self.temperature:g})", xlabel="Tr(Cov) across crops", ylabel="images")
        ax[1].hist(100 * self.per_class_mismatch[self._present()], bins=50, color="tab:red")
        ax[1].set(title="top-1 != image class, per class", xlabel="% of records", ylabel="classes")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


def drift_report(label_file: LabelFile | str | Path, classes: np.ndarray, T: float = 1.0, progress: bool = False) -> DriftReport:
    """HALD's drift measures for ``label_file`` given each image's class (``classes[i]``)."""
    own = isinstance(label_file, (str, Path))
    f = LabelFile(label_file) if own else label_file
    try:
        classes = np.asarray(classes).reshape(-1)
        if classes.shape != (f.num_images,) or not np.issubdtype(classes.dtype, np.integer):
            raise LabelStoreError(f"classes must be {f.num_images} integer labels (one per image), got {classes.shape} {classes.dtype}")
        if classes.min() < 0 or classes.max() >= f.num_classes:
            raise LabelStoreError(f"classes must lie in 0..{f.num_classes - 1}")
        N, C = f.num_images, f.num_classes
        mean = np.zeros((N, C))
        sq = np.zeros(N)
        count = np.zeros(N)
        wrong = np.zeros(C)
        per = np.zeros(C)
        wrong_both = 0
        from tqdm import tqdm

        for bt in tqdm(f.batches(), total=len(f), disable=not progress, desc="drift", unit="batch"):
            p = softmax(bt.logits, T).astype(np.float64)
            ids = bt.indices
            np.add.at(mean, ids, p)
            np.add.at(sq, ids, (p * p).sum(1))
            np.add.at(count, ids, 1)
            top = bt.logits.argmax(1)
            c = classes[ids]
            miss = top != c
            np.add.at(wrong, c, miss)
            np.add.at(per, c, 1)
            partner = classes[ids[bt.mix.partner]] if bt.mix is not None else c
            wrong_both += int((miss & (top != partner)).sum())
        seen = count > 0
        mean[seen] /= count[seen, None]
        spread = np.where(seen, sq / np.maximum(count, 1) - (mean * mean).sum(1), 0.0)
        records = int(count.sum())
        return DriftReport(records, float(wrong.sum() / max(records, 1)), wrong_both / max(records, 1),
                           np.divide(wrong, per, out=np.zeros(C), where=per > 0), np.maximum(spread, 0.0), float(T),
                           per_class_records=per)
    finally:
        if own:
            f.close()
