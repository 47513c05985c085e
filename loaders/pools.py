"""Label pools: which stored batches a training epoch replays when fewer epochs are stored than trained.

``cycle`` (label epoch k uses stored epoch k mod S), ``replacement`` (LPLD: each epoch draws
its batches from all stored batches with replacement), ``without_replacement`` (HALD: a
shuffled bag of all stored batches, refilled when empty) or ``without_replacement_per_phase``
(the same bag, emptied at the start of every soft phase, as HALD's ``train_fkd.py`` does).
Draws are seeded and reproducible, and come from exactly the batches the file stores (a
partial last epoch included).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from labelstore import LabelStoreError

_POOL_STREAM = 0x504F4F4C  # "POOL": keeps pool draws apart from any other use of the seed
POOL_POLICIES = ("cycle", "replacement", "without_replacement", "without_replacement_per_phase")


@dataclass(frozen=True)
class LabelPool:
    """How label epoch k (the k-th training epoch that replays labels) picks its stored batches."""

    policy: str

    def __post_init__(self):
        if self.policy not in POOL_POLICIES:
            raise LabelStoreError(f"unknown pool policy {self.policy!r}; use one of {', '.join(POOL_POLICIES)}")

    @property
    def per_phase(self) -> bool:
        """True when each soft phase starts a fresh bag (``k`` then counts label epochs within the phase)."""
        return self.policy == "without_replacement_per_phase"

    def assign(self, k: int, num_batches: int, stored_epochs: int, seed: int, stored: np.ndarray | None = None,
               phase: int = 0) -> np.ndarray:
        """``(num_batches, 2)`` int64 rows of (stored epoch, stored batch) for label epoch ``k``
        (of soft phase ``phase``, for the per-phase bag).

        ``stored``: the ``(P, 2)`` (epoch, batch) rows the file holds (``LabelFile.stored_batches()``),
        when some epoch is partial; default every batch of ``stored_epochs`` complete epochs.
        Draws index into that list, so complete files draw exactly as before.
        """
        nb, S = int(num_batches), int(stored_epochs)
        if stored is not None:
            stored = np.asarray(stored, np.int64).reshape(-1, 2)
        if self.policy == "cycle":
            e = k % S
            if stored is None:
                return np.stack([np.full(nb, e), np.arange(nb)], 1).astype(np.int64)
            rows = stored[stored[:, 0] == e]
            if len(rows) != nb:
                raise LabelStoreError(
                    f"pool 'cycle' replays whole stored epochs, but stored epoch {e} holds {len(rows)} of its {nb} "
                    "batches (a partial epoch, as LPLD's label pools end in); use pool='replacement' (LPLD) or "
                    "'without_replacement' (HALD), which draw from exactly the stored batches")
            return rows
        P = S * nb if stored is None else len(stored)
        if self.policy == "replacement":
            flat = np.random.default_rng([seed, _POOL_STREAM, 0, k]).integers(0, P, size=nb)
        else:  # the bag: concatenated shuffles of all P stored batches; epoch k takes [k nb, (k+1) nb)
            pos = np.arange(k * nb, (k + 1) * nb, dtype=np.int64)
            flat = np.empty(nb, np.int64)
            for r in np.unique(pos // P):
                sel = pos // P == r
                key = [seed, _POOL_STREAM, 2, int(phase), int(r)] if self.per_phase else [seed, _POOL_STREAM, 1, int(r)]
                flat[sel] = np.random.default_rng(key).permutation(P)[pos[sel] % P]
        # complete epochs: flat index e * nb + b, with no table of all stored batches built per epoch
        return np.stack(np.divmod(flat, nb), 1).astype(np.int64) if stored is None else stored[flat]

    def __str__(self) -> str:
        return self.policy


def resolve_pool(pool: LabelPool | str | None) -> LabelPool | None:
    if pool is None or isinstance(pool, LabelPool):
        return pool
    return LabelPool(str(pool).replace("-", "_"))
