"""Crop, antialiased resize and flip of a whole batch in one batched computation, on any device.

The pixels are those of torch's uint8 antialiased bilinear resize (``F.interpolate(uint8,
mode="bilinear", antialias=True)`` on CPU, the kernel ``TorchBackend`` runs through
torchvision): PIL's triangle filter widened by the shrink factor, weights normalised in
float64 and rounded to int16 at the largest precision the axis allows, a horizontal pass
then a vertical one, each rounded half up and saturated to 0..255. :func:`axis_weights` is a
port of torch's weight computation (``_compute_indices_min_size_weights_aa`` and
``_compute_index_ranges_int16_weights``), in the same operation order.

Each pass is one ``F.embedding_bag`` call over the whole batch: a bag per output pixel row,
its taps the source rows with their integer weights scaled by ``2**-precision``. Every
product and partial sum is a multiple of ``2**-precision`` below 512, so float32 holds it
exactly up to precision 15 (float64 beyond): the sums do not depend on summation order, and
the pixels are the same on CPU and CUDA. No matmul is involved, so TF32 settings do not
reach it. A constant row of 0.5 with weight 1 adds the rounding offset inside the same call.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

INTERPOLATION = ("bilinear, antialiased: torch's uint8 resize (PIL-style int16 weights, horizontal pass then "
                 "vertical, each rounded), exact integer arithmetic")
_F32_PRECISION = 15  # products and sums stay exact in float32 up to this weight precision
_CHUNK = 256  # source lengths per numpy block when building tables


def axis_weights(lengths: np.ndarray, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torch's uint8 antialiased bilinear weights for resizing each length in ``lengths`` to ``out``.

    Returns ``xmin`` (m, out) first source index per output index, ``weights`` (m, out, K)
    int16 values (zero past each output's taps), ``precision`` (m,) bits, and ``taps`` (m,)
    the max interpolation size (K is the largest). Same double-precision operations, in the
    same order, as torch's C++ (so the int16 weights are equal, not merely close).
    """
    L = np.asarray(lengths, np.int64).reshape(-1)
    m = len(L)
    scale = L.astype(np.float64) / float(out)  # area_pixel_compute_scale, align_corners=False
    big = scale >= 1.0
    support = np.where(big, 1.0 * scale, 1.0)  # (interp_size * 0.5) * scale, interp_size 2
    taps = np.ceil(support).astype(np.int64) * 2 + 1
    invscale = np.where(big, 1.0 / np.where(big, scale, 1.0), 1.0)
    K = int(taps.max()) if m else 1
    i = np.arange(out, dtype=np.float64)
    center = scale[:, None] * (i + 0.5)[None, :]
    xmin = np.maximum((center - support[:, None] + 0.5).astype(np.int64), 0)  # C++ casts truncate toward zero
    xsize = np.minimum((center + support[:, None] + 0.5).astype(np.int64), L[:, None]) - xmin
    xsize = np.clip(xsize, 0, taps[:, None])
    w = np.zeros((m, out, K), np.float64)
    total = np.zeros((m, out), np.float64)
    for j in range(K):  # sequential sum, as the C++ loop adds
        x = np.abs(((j + xmin).astype(np.float64) - center + 0.5) * invscale[:, None])
        wj = np.where(x < 1.0, 1.0 - x, 0.0)
        wj = np.where(j < xsize, wj, 0.0)
        w[:, :, j] = wj
        total += wj
    nz = total != 0.0
    w = np.where(nz[..., None], w / np.where(nz, total, 1.0)[..., None], w)
    wt_max = w.max(axis=(1, 2)) if m else np.zeros(0)
    precision = np.zeros(m, np.int64)
    for p in range(22):  # the largest precision whose doubled max weight still fits int16
        grows = (0.5 + wt_max * float(1 << (p + 1))).astype(np.int64) < (1 << 15)
        precision = np.where(grows & (precision == p), p + 1, precision)
    q = (0.5 + w * np.exp2(precision.astype(np.float64))[:, None, None]).astype(np.int64)  # (int)(0.5 + v), v >= 0
    return xmin, q, precision, taps


class AxisTable:
    """Device tables for one output length and source lengths 1..lmax: first index, scaled weights."""

    def __init__(self, out: int, lmax: int, device: torch.device):
        xs, ws, ps, ts = [], [], [], []
        for a in range(1, lmax + 1, _CHUNK):
            x, q, p, t = axis_weights(np.arange(a, min(lmax, a + _CHUNK - 1) + 1), out)
            xs.append(x)
            ws.append(q)
            ps.append(p)
            ts.append(t)
        K = max(w.shape[2] for w in ws)
        scaled = np.concatenate([np.pad(w, ((0, 0), (0, 0), (0, K - w.shape[2]))) for w in ws])
        self.precision = np.concatenate(ps)  # host copies: choose dtype and tap count without a device sync
        self.taps = np.concatenate(ts)
        scaled = scaled * np.exp2(-self.precision.astype(np.float64))[:, None, None]  # exact: int16 x 2**-p
        self.xmin = torch.as_tensor(np.concatenate(xs)).to(device)
        self.weights = torch.as_tensor(scaled.astype(np.float32)).to(device)  # exact in float32 too
        self.out, self.lmax = int(out), int(lmax)


class Tables:
    """An AxisTable per output length, for source lengths up to the image set's longest side, built on first use
    (a few MB for a 224 px set; it grows with longest side squared)."""

    def __init__(self, device: torch.device, lmax: int):
        self.device, self.lmax = torch.device(device), max(1, int(lmax))
        self._tables: dict[int, AxisTable] = {}

    def get(self, out: int) -> AxisTable:
        if int(out) not in self._tables:
            self._tables[int(out)] = AxisTable(out, self.lmax, self.device)
        return self._tables[int(out)]


def _pass(table: torch.Tensor, length: int, lengths_dev: torch.Tensor, lengths: np.ndarray, axis: AxisTable,
          n: int, C: int, flips: torch.Tensor | None) -> torch.Tensor:
    """One separable pass: ``table`` rows (n*C*length + 1, D), last row 0.5 -> uint8 (n*C*out, D)."""
    out, dev = axis.out, table.device
    K = int(axis.taps[lengths - 1].max())
    first = axis.xmin[lengths_dev - 1]  # (n, out)
    w = axis.weights[lengths_dev - 1, :, :K].to(table.dtype)  # (n, out, K)
    if flips is not None:  # a flipped crop reads its output columns right to left
        first = torch.where(flips[:, None], first.flip(1), first)
        w = torch.where(flips[:, None, None], w.flip(1), w)
    src = torch.minimum(first[:, :, None] + torch.arange(K, device=dev), (lengths_dev - 1)[:, None, None])
    ids = torch.arange(n * C, device=dev).view(n, C, 1, 1) * length + src[:, None]
    ids = torch.cat([ids, ids.new_full((n, C, out, 1), n * C * length)], 3).view(-1, K + 1)  # + the 0.5 row
    pw = torch.cat([w, w.new_ones(n, out, 1)], 2)[:, None].expand(n, C, out, K + 1).reshape(-1, K + 1)
    s = F.embedding_bag(ids, table, per_sample_weights=pw, mode="sum")
    # (acc + 2**(p-1)) >> p, saturated as torch does: the sums are >= 0, and float -> uint8 truncates
    return s.clamp_(max=255.0).to(torch.uint8)


def _dtype(axis: AxisTable, lengths: np.ndarray) -> torch.dtype:
    return torch.float32 if int(axis.precision[lengths - 1].max()) <= _F32_PRECISION else torch.float64


def resample_windows(windows: torch.Tensor, hs: np.ndarray, ws: np.ndarray, hs_dev: torch.Tensor,
                     ws_dev: torch.Tensor, flips_dev: torch.Tensor, size: tuple[int, int], tables: Tables) -> torch.Tensor:
    """Resize each crop (at the origin of its window) to ``size`` and flip: uint8 ``(n, C, H, W)``.

    ``windows``: uint8 ``(n, hb, wb, C)``, each crop at its window's origin (the rest of a
    window is never read with a non-zero weight); ``hs``, ``ws``: the crops' heights and
    widths on the host (int64: they choose tap counts and dtypes without a device sync) and on
    the device; ``flips_dev``: (n,) bool.
    """
    n, hb, wb, C = windows.shape
    H, W = (int(s) for s in size)
    ax_x, ax_y = tables.get(W), tables.get(H)
    dt = _dtype(ax_x, ws)
    X = torch.empty(n * C * wb + 1, hb, dtype=dt, device=windows.device)
    X[:-1].view(n, C, wb, hb).copy_(windows.permute(0, 3, 2, 1))  # rows (i, c, x): the horizontal pass
    X[-1] = 0.5
    s = _pass(X, wb, ws_dev, ws, ax_x, n, C, flips_dev)  # (n*C*W, hb)
    del X
    # vertical pass: rows (i, c, y), values along the W output columns
    dt = _dtype(ax_y, hs)
    T = torch.empty(n * C * hb + 1, W, dtype=dt, device=windows.device)
    T[:-1].view(n, C, hb, W).copy_(s.view(n, C, W, hb).transpose(2, 3))  # a uint8 transpose: 4x fewer bytes
    T[-1] = 0.5
    del s
    s = _pass(T, hb, hs_dev, hs, ax_y, n, C, None)  # (n*C*H, W)
    return s.view(n, C, H, W)


def native_resize(crop: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torch's own uint8 kernel on one CPU crop ``(C, h, w)``: the pixels :func:`resample_windows` reproduces."""
    if tuple(crop.shape[-2:]) == tuple(size):
        return crop
    return F.interpolate(crop[None], size=list(size), mode="bilinear", align_corners=False, antialias=True)[0]
