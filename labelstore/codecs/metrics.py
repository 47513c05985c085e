"""Fidelity of decoded labels: what a codec loses, measured the way training uses labels."""
from __future__ import annotations

import numpy as np

from .base import LabelCodec


def log_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise ``log softmax(logits / T)`` in float64."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fidelity(reference: np.ndarray, decoded: np.ndarray,
             temperatures: tuple[float, ...] = (20.0, 1.0)) -> dict[str, float]:
    """Mean KL(p_ref || p_dec) at each temperature (keys ``kl_t20``, ``kl_t1``, ...), top-1
    agreement and top-5 overlap (fraction of the reference's top 5 found in the decoded top 5).
    Shift-invariant, like softmax: codecs may decode each record shifted by a constant."""
    out: dict[str, float] = {}
    for t in temperatures:
        lp, lq = log_softmax(reference, t), log_softmax(decoded, t)
        kl = (np.exp(lp) * (lp - lq)).sum(axis=1)
        out[f"kl_t{t:g}"] = float(np.maximum(kl, 0).mean()) if len(kl) else 0.0
    ref, dec = np.asarray(reference), np.asarray(decoded)
    out["top1"] = float((ref.argmax(1) == dec.argmax(1)).mean()) if len(ref) else 1.0
    k = min(5, ref.shape[1])
    a, b = np.argsort(-ref, 1)[:, :k], np.argsort(-dec, 1)[:, :k]
    out["top5"] = float((a[:, :, None] == b[:, None, :]).any(2).mean()) if len(ref) else 1.0
    return out


def measure(codec: LabelCodec, logits: np.ndarray, batch: int = 1024) -> dict[str, float]:
    """Encode and decode ``logits`` in chunks of ``batch`` records; the fidelity plus
    ``bytes_per_record`` (label bytes, framing included). Fit learned codecs first."""
    chunks = [logits[i:i + batch] for i in range(0, len(logits), batch)] or [logits]
    blobs = [codec.encode(c) for c in chunks]
    decoded = np.concatenate([codec.decode(b) for b in blobs])
    return {"bytes_per_record": sum(map(len, blobs)) / max(len(logits), 1),
            **fidelity(logits, decoded)}
