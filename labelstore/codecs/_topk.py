"""Vectorised helpers shared by the codecs that keep each record's k largest logits."""
from __future__ import annotations

import numpy as np

_ARGMAX_MAX_K = 24


def top_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(n, k)`` of each row's k largest values, in descending order of value
    (deterministic; equal values keep class order, except that a tie at the k-th place
    may keep any of the tied classes when k is large)."""
    n, c = x.shape
    if n == 0 or k == 0:
        return np.zeros((n, k), np.int64)
    if k >= c:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    if k <= _ARGMAX_MAX_K:
        # k vectorised argmax passes beat argpartition (a full pass per row) for small k
        work = x.copy()
        rows = np.arange(n)
        idx = np.empty((n, k), np.int64)
        for j in range(k):
            idx[:, j] = work.argmax(axis=1)
            work[rows, idx[:, j]] = -np.inf
        return idx
    part = np.argpartition(x, c - k, axis=1)[:, c - k:]
    part.sort(axis=1)  # stable tie-break by class index
    vals = np.take_along_axis(x, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def tail_level(x: np.ndarray, idx: np.ndarray, temperature: float) -> np.ndarray:
    """One value per row for the classes outside ``idx``: the value c whose constant fill gives
    the tail exactly its probability mass at ``temperature`` (KL-optimal for a constant),
    ``c = T * log(mean(exp(x_tail / T)))``; the plain tail mean when ``temperature == 0``."""
    n, c = x.shape
    k = idx.shape[1]
    rows = np.arange(n)[:, None]
    if temperature <= 0:
        total = x.sum(axis=1, dtype=np.float64) - np.take_along_axis(x, idx, 1).sum(1, dtype=np.float64)
        return total / (c - k)
    masked = x.copy()
    masked[rows, idx] = -np.inf
    m = masked.max(axis=1)
    w = (masked - m[:, None]) * np.float32(1.0 / temperature)
    np.exp(w, out=w)
    s = w.sum(axis=1, dtype=np.float64)  # >= 1: the tail's own maximum contributes exp(0)
    return m + temperature * np.log(s / (c - k))


def gap_codes(gaps: np.ndarray, step: float, strict_first: bool = False) -> np.ndarray:
    """Quantise non-decreasing non-negative gaps ``(n, m)`` (distance below each row's maximum)
    to non-decreasing integer codes. The first gap gets code >= 1 when it is > 0, so the row's
    maximum stays the unique argmax after decoding (its error is then at most ``step``);
    with ``strict_first`` it gets code >= 1 even when it is 0 (a tie is then broken)."""
    q = np.rint(np.minimum(gaps / step, 2.0**32 - 1))
    if q.shape[1]:
        floor = 1 if strict_first else (gaps[:, 0] > 0)
        q[:, 0] = np.maximum(q[:, 0], floor)
        np.maximum.accumulate(q, axis=1, out=q)
    return q.astype(np.int64)
