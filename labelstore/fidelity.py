"""How close decoded soft labels are to the originals: KL divergence at a temperature, top-1
agreement and top-5 overlap. Shared by ``budget``, ``pack --budget`` and codec benchmarks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import LabelStoreError


def log_softmax(logits: np.ndarray, T: float = 1.0) -> np.ndarray:
    """``log softmax(logits / T)`` in float64, row-wise."""
    if T <= 0:
        raise LabelStoreError(f"temperature must be positive, got {T}")
    z = np.asarray(logits, dtype=np.float64) / T
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(reference: np.ndarray, approx: np.ndarray, T: float = 1.0) -> np.ndarray:
    """Per-record ``KL(softmax(reference/T) || softmax(approx/T))`` in nats (>= 0)."""
    lp, lq = log_softmax(reference, T), log_softmax(approx, T)
    return np.maximum((np.exp(lp) * (lp - lq)).sum(axis=-1), 0.0)


def top1_agreement(reference: np.ndarray, approx: np.ndarray) -> float:
    """Fraction of records whose arg-max class is the same."""
    if len(reference) == 0:
        return 1.0
    return float((np.argmax(reference, -1) == np.argmax(approx, -1)).mean())


def topk_overlap(reference: np.ndarray, approx: np.ndarray, k: int = 5) -> float:
    """Mean fraction of the reference's top-k classes that are also in the approximation's top-k."""
    if len(reference) == 0:
        return 1.0
    k = min(k, reference.shape[1])
    a = np.argpartition(-np.asarray(reference), k - 1, axis=1)[:, :k]
    b = np.argpartition(-np.asarray(approx), k - 1, axis=1)[:, :k]
    return float(np.mean([len(np.intersect1d(x, y, assume_unique=True)) / k for x, y in zip(a, b)]))


@dataclass(frozen=True)
class Fidelity:
    """Mean KL at T=20 and T=1, top-1 agreement, top-5 overlap, over ``records`` records."""

    kl_t20: float
    kl_t1: float
    top1: float
    top5: float
    records: int

    def kl(self, T: float) -> float:
        if T == 20:
            return self.kl_t20
        if T == 1:
            return self.kl_t1
        raise LabelStoreError("Fidelity keeps KL at T=20 and T=1 only; use kl_divergence for other temperatures")

    def to_dict(self) -> dict:
        return asdict(self)


def measure(reference: np.ndarray, approx: np.ndarray) -> Fidelity:
    """Fidelity of ``approx`` (decoded logits) to ``reference`` (original logits)."""
    reference, approx = np.asarray(reference), np.asarray(approx)
    if reference.shape != approx.shape or reference.ndim != 2:
        raise LabelStoreError(f"fidelity needs two (n, C) arrays of one shape, got {reference.shape} and {approx.shape}")
    return Fidelity(
        kl_t20=float(kl_divergence(reference, approx, 20.0).mean()) if len(reference) else 0.0,
        kl_t1=float(kl_divergence(reference, approx, 1.0).mean()) if len(reference) else 0.0,
        top1=top1_agreement(reference, approx),
        top5=topk_overlap(reference, approx, 5),
        records=len(reference),
    )


def codec_fidelity(codec, logits: np.ndarray, batch_size: int) -> tuple[Fidelity, float]:
    """Encode ``logits`` in chunks of ``batch_size`` with ``codec``; returns the fidelity of the
    decoded logits and the mean encoded bytes per record (what a label file of such chunks holds)."""
    logits = np.asarray(logits, dtype=np.float32)
    decoded, nbytes = [], 0
    for s in range(0, len(logits), max(1, batch_size)):
        blob = codec.encode(logits[s : s + batch_size])
        nbytes += len(blob)
        decoded.append(codec.decode(blob))
    out = np.concatenate(decoded) if decoded else logits[:0]
    return measure(logits, out), nbytes / max(len(logits), 1)
