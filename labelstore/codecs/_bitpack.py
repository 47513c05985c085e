"""Tight packing of 4- and 6-bit unsigned codes into bytes (vectorised, little-endian order).

4 bits: two codes per byte, the first in the low nibble. 6 bits: four codes a, b, c, d in
three bytes holding the 24-bit integer ``a | b << 6 | c << 12 | d << 18`` little-endian.
The code stream is zero-padded to a whole group.
"""
from __future__ import annotations

import numpy as np


def packed_size(count: int, bits: int) -> int:
    if bits == 8:
        return count
    if bits == 4:
        return (count + 1) // 2
    if bits == 6:
        return (count + 3) // 4 * 3
    raise ValueError(bits)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack a flat uint8 array of codes below ``2**bits``."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return codes.tobytes()
    group = 2 if bits == 4 else 4
    pad = (-codes.size) % group
    if pad:
        codes = np.concatenate([codes, np.zeros(pad, np.uint8)])
    if bits == 4:
        pairs = codes.reshape(-1, 2)
        return (pairs[:, 0] | (pairs[:, 1] << 4)).tobytes()
    quads = codes.reshape(-1, 4)
    out = np.empty((quads.shape[0], 3), np.uint8)
    out[:, 0] = quads[:, 0] | (quads[:, 1] << 6)
    out[:, 1] = (quads[:, 1] >> 2) | (quads[:, 2] << 4)
    out[:, 2] = (quads[:, 2] >> 4) | (quads[:, 3] << 2)
    return out.tobytes()


def unpack_codes(buf, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``count`` codes as uint8."""
    raw = np.frombuffer(buf, np.uint8, packed_size(count, bits))
    if bits == 8:
        return raw
    if bits == 4:
        out = np.empty((raw.size, 2), np.uint8)
        out[:, 0] = raw & 0x0F
        out[:, 1] = raw >> 4
        return out.reshape(-1)[:count]
    tri = raw.reshape(-1, 3)
    out = np.empty((tri.shape[0], 4), np.uint8)
    out[:, 0] = tri[:, 0] & 0x3F
    out[:, 1] = (tri[:, 0] >> 6) | ((tri[:, 1] & 0x0F) << 2)
    out[:, 2] = (tri[:, 1] >> 4) | ((tri[:, 2] & 0x03) << 4)
    out[:, 3] = tri[:, 2] >> 2
    return out.reshape(-1)[:count]
