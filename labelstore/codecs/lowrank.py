"""``lowrank``: a basis of the teacher's logit space fitted at pack time (PCA of a sample),
a few coarsely quantised coefficients per record, and the top-k classes corrected exactly."""
from __future__ import annotations

import struct

import numpy as np

from ..errors import LabelStoreError
from . import _frame, _topk
from .base import LabelCodec
from .registry import register_codec

# rank, step, k, top_step, then dtype codes of: coefficients, top-1 residual, indices, gaps
_FIELDS = struct.Struct("<IfIfBBBB")


@register_codec
class LowRank(LabelCodec):
    """Learned low-rank codec. Each record is centred (its mean logit removed: softmax does
    not see it), projected on ``rank`` principal directions fitted by :meth:`fit`, and the
    coefficients are rounded to multiples of ``step``. The ``k`` largest classes are then
    corrected: the top-1 logit to within ``top_step / 2`` of its centred value, the others as
    gaps below it (as in ``topk``), so the top-k order and argmax decode exactly; every other
    class is capped just below the k-th kept value. ``k=0`` stores the projection alone.

    Decoded logits are the record's logits minus their mean (up to the coding error).
    """

    codec_id = "lowrank"
    tag = 4
    needs_fit = True

    def __init__(self, num_classes: int, rank: int = 16, step: float = 0.5, k: int = 1,
                 top_step: float = 1 / 32, level: int = 3):
        super().__init__(num_classes)
        if int(rank) < 1 or int(k) < 0:
            raise LabelStoreError(f"lowrank needs rank >= 1 and k >= 0 (got rank={rank}, k={k})")
        if not (float(step) > 0 and float(top_step) > 0):
            raise LabelStoreError(f"lowrank step and top_step must be > 0 (got {step}, {top_step})")
        self.rank, self.step, self.k = int(rank), float(np.float32(step)), int(k)
        self.top_step, self.level = float(np.float32(top_step)), int(level)
        self._mean: np.ndarray | None = None
        self._basis: np.ndarray | None = None

    # -- learned parameters ---------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._basis is not None

    def fit(self, sample: np.ndarray) -> "LowRank":
        """PCA of the centred sample logits: the mean and the ``rank`` leading directions."""
        x = self._check_logits(sample).astype(np.float64)
        if x.shape[0] < 2:
            raise LabelStoreError("lowrank.fit needs a sample of at least 2 records "
                                  f"(got {x.shape[0]}); pass more logits, e.g. 2,000+")
        x -= x.mean(axis=1, keepdims=True)
        mean = x.mean(axis=0)
        x -= mean
        basis = _leading_directions(x, self.rank)
        # deterministic signs: each direction's largest-magnitude entry positive
        signs = np.sign(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)])
        basis = basis * np.where(signs == 0, 1, signs)[:, None]
        if len(basis) < self.rank:  # fewer directions than asked: pad with inert zero rows
            basis = np.vstack([basis, np.zeros((self.rank - len(basis), x.shape[1]))])
        self._set_arrays({"mean": mean, "basis": basis})
        return self

    def get_arrays(self) -> dict[str, np.ndarray]:
        if not self.is_fitted:
            return {}
        return {"mean": self._mean, "basis": self._basis}

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if set(arrays) != {"mean", "basis"}:
            raise LabelStoreError(f"lowrank takes arrays 'mean' and 'basis', got {sorted(arrays)}")
        mean = np.ascontiguousarray(arrays["mean"], dtype=np.float32)
        basis = np.ascontiguousarray(arrays["basis"], dtype=np.float32)
        if mean.shape != (self.num_classes,) or basis.shape != (self.rank, self.num_classes):
            raise LabelStoreError(
                f"lowrank arrays have shapes mean {mean.shape}, basis {basis.shape}; expected "
                f"({self.num_classes},) and ({self.rank}, {self.num_classes}) for this config")
        if not (np.isfinite(mean).all() and np.isfinite(basis).all()):
            raise LabelStoreError("lowrank arrays contain NaN or Inf; re-fit the codec")
        self._mean, self._basis = mean, basis

    def _require_fit(self) -> None:
        if not self.is_fitted:
            raise LabelStoreError("lowrank codec is not fitted: call fit(sample_logits) before "
                                  "encoding, or load it with its stored arrays")

    def _reconstruct(self, codes: np.ndarray, step: float) -> np.ndarray:
        # identical in encoder and decoder, so top-k residuals are taken against what decodes
        coef = np.ascontiguousarray(codes, dtype=np.float32) * np.float32(step)
        recon = coef @ self._basis
        recon += self._mean
        return recon

    # -- coding ---------------------------------------------------------------------------
    def encode(self, logits: np.ndarray) -> bytes:
        self._require_fit()
        x = self._check_logits(logits)
        n, c = x.shape
        xc = x - x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        coef = (xc - self._mean) @ self._basis.T
        codes = np.rint(np.clip(coef / np.float32(self.step), -2.0**31, 2.0**31 - 1)).astype(np.int64)
        k = min(self.k, c)
        idx = _topk.top_indices(xc, k)
        streams = [_frame.shuffle_bytes(codes.T.astype(_int_dtype(codes)))]
        r1 = np.zeros((n, 0), np.int64)
        gaps_q = np.zeros((n, 0), np.int64)
        if k:
            recon = self._reconstruct(codes, self.step)
            top1 = np.take_along_axis(xc, idx[:, :1], 1).astype(np.float64)
            base = np.take_along_axis(recon, idx[:, :1], 1)
            r1 = np.rint(np.clip((top1 - base) / self.top_step, -2.0**31, 2.0**31 - 1)).astype(np.int64)
            # kept values below top-1 as gaps from the *decoded* top-1, so order stays exact
            top1_dec = base + (r1 * np.float32(self.top_step)).astype(np.float32)
            vals = np.take_along_axis(xc, idx[:, 1:], 1).astype(np.float64)
            gaps = np.maximum(top1_dec - vals, 0.0)
            gaps_q = _topk.gap_codes(gaps, self.top_step, strict_first=True)
        deltas = np.diff(gaps_q, axis=1, prepend=0).T
        idx_dt = _frame.smallest_uint(c - 1)
        fields = _FIELDS.pack(self.rank, self.step, k, self.top_step,
                              _frame.dtype_code(_int_dtype(codes)), _frame.dtype_code(_int_dtype(r1)),
                              _frame.dtype_code(idx_dt), _frame.dtype_code(_uint_dtype(deltas)))
        streams += [_frame.shuffle_bytes(r1.astype(_int_dtype(r1))),
                    _frame.shuffle_bytes(idx.astype(idx_dt)),
                    _frame.shuffle_bytes(deltas.astype(_uint_dtype(deltas)))]
        return _frame.pack(self.tag, n, c, fields, streams, self.level)

    def decode(self, data: bytes) -> np.ndarray:
        self._require_fit()
        n, rest = _frame.unpack(data, self.tag, self.num_classes, self.codec_id)
        reader = _frame.Reader(rest, self.codec_id)
        rank, step, k, top_step, cd, rd, idd, gd = reader.struct(_FIELDS)
        c, cid = self.num_classes, self.codec_id
        if rank != self.rank or k > c:
            raise LabelStoreError(f"{cid}: chunk has rank {rank}, k {k}; the codec's basis has "
                                  f"rank {self.rank}: the chunk belongs to another codec config")
        codes = reader.array(_frame.dtype_from_code(cd, cid), n * rank).reshape(rank, n).T
        r1 = reader.array(_frame.dtype_from_code(rd, cid), n * min(k, 1)).reshape(n, min(k, 1))
        idx = reader.array(_frame.dtype_from_code(idd, cid), n * k).reshape(n, k).astype(np.intp)
        deltas = reader.array(_frame.dtype_from_code(gd, cid), n * max(k - 1, 0)).reshape(max(k - 1, 0), n)
        reader.finish()
        out = self._reconstruct(codes, step)
        if k == 0 or n == 0:
            return out
        if int(idx.max()) >= c:
            raise LabelStoreError(f"{cid}: corrupt chunk (class index out of range)")
        top1 = np.take_along_axis(out, idx[:, :1], 1) + (r1 * np.float32(top_step)).astype(np.float32)
        gaps = np.cumsum(deltas.T, axis=1, dtype=np.float64).astype(np.float32) * np.float32(top_step)
        kept = np.concatenate([top1, top1 - gaps], axis=1)
        # every other class sits below the k-th kept value (true for the original logits)
        np.minimum(out, np.nextafter(kept[:, -1:], np.float32(-np.inf)), out=out)
        np.put_along_axis(out, idx, kept, axis=1)
        return out


def _int_dtype(a: np.ndarray) -> np.dtype:
    return _frame.smallest_int(int(a.min()), int(a.max())) if a.size else np.dtype(np.int8)


def _uint_dtype(a: np.ndarray) -> np.dtype:
    return _frame.smallest_uint(int(a.max())) if a.size else np.dtype(np.uint8)


_EXACT_LIMIT = 2048  # exact decompositions up to this min(records, classes); randomized above


def _leading_directions(x: np.ndarray, rank: int) -> np.ndarray:
    """The ``rank`` leading right singular vectors of ``x`` (m, C), as rows.

    Exact (SVD of the sample or eigh of the C x C scatter) while the smaller side is small; for
    large samples of many classes (21,843 for ImageNet-21K) a seeded randomized SVD (Halko et
    al. 2011: oversampling 32, 6 power iterations): on a 6000 x 5000 sample with a slowly
    decaying spectrum, 6x faster and its 64 directions capture 99.999 % of the exact ones' variance.
    """
    m, c = x.shape
    if min(m, c) <= _EXACT_LIMIT or rank * 4 > min(m, c):
        if m < c:  # cheaper: SVD of the (m, C) sample
            return np.linalg.svd(x, full_matrices=False)[2][:rank]
        w, v = np.linalg.eigh(x.T @ x)  # cheaper: eigenvectors of the (C, C) scatter matrix
        return v[:, np.argsort(w)[::-1]].T[:rank]
    k = rank + 32
    q = np.linalg.qr(x @ np.random.default_rng(0).standard_normal((c, k)))[0]
    for _ in range(6):  # power iterations sharpen the spectrum; QR each time keeps them stable
        q = np.linalg.qr(x @ np.linalg.qr(x.T @ q)[0])[0]
    return np.linalg.svd(q.T @ x, full_matrices=False)[2][:rank]
