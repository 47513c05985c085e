"""A counter-based random number generator: every draw is a pure function of its key.

Keyed by (seed, epoch, index, stream), a draw never depends on batch size, sharding or the
order in which records are produced, so crops and orders can be re-derived instead of stored.
The mixing function is SplitMix64's finaliser, applied once per key word (docs/format.md).
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Stream ids: which quantity a draw is for.
STREAM_ORDER = 1
STREAM_CROP = 2  # 10 attempts x (area, log-ratio) + position y, x + flip => sub-streams below
STREAM_MIX = 3


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash64(*words) -> np.ndarray:
    """Hash a key of integer words (scalars or broadcastable arrays) to uint64."""
    h = np.uint64(0)
    with np.errstate(over="ignore"):
        for w in words:
            w = np.asarray(w)
            if w.dtype.kind == "i" and (w < 0).any():
                raise ValueError("rng key words must be non-negative")
            w = (w.astype(np.uint64) if w.dtype != np.uint64 else w)
            h = _mix(h + _GOLDEN + w)
    return np.asarray(h, dtype=np.uint64)


def uniform(*words) -> np.ndarray:
    """Uniform floats in [0, 1) with 53 random bits, one per broadcast key."""
    return (hash64(*words) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def permutation(seed: int, epoch: int, n: int, stream: int = STREAM_ORDER) -> np.ndarray:
    """A permutation of range(n) keyed by (seed, epoch): argsort of per-index hashes."""
    keys = hash64(seed, epoch, stream, np.arange(n, dtype=np.uint64))
    return np.argsort(keys, kind="stable").astype(np.int64)
