"""LabelWriter: append per-batch teacher outputs; the file becomes valid only at finalize.

Batches go to an append-only journal beside the target (``<file>.partial/``). Opening a
writer on a target whose journal exists resumes it (same settings required): batches
already written are kept, and ``is_written`` tells the caller what to skip. ``finalize``
builds the HDF5 file under a temporary name and renames it into place, so a reader never
sees a half-written label file.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ._format import DERIVED, EXPLICIT, NONE
from ._journal import BatchEntry, Journal, journal_dir, shard_dirs  # noqa: F401  (re-exported: docs/api.md)
from ._writer_checks import (  # noqa: F401  (SOURCES: re-exported, it was defined here)
    SOURCES, check_modes, check_present, check_resumable, check_shard, check_sizes, crop_section,
    default_crop_policy, make_codec, mix_section, positive_int,
)
from .codecs import LabelCodec
from .batch import logits_from_probs  # noqa: F401  (re-exported: importers use it from here)
from .crops import CropPolicy, Mix, MixPolicy, draw_crops, draw_mix, draw_order
from .errors import LabelStoreError, describe_ranges


class LabelWriter:
    """Write one label set: per (epoch, batch), the teacher's logits for each crop.

    Crops, orders and mixing are ``"derived"`` (re-drawn from ``seed``, zero bytes) or
    ``"explicit"`` (given to ``begin_epoch`` / ``write_batch`` and stored). ``pixels`` records
    how the pixels the teacher saw were made (crop size, normalisation, backend: the keys are
    the loaders'), so a replay can default to them and refuse others. Use as a context
    manager: a clean exit finalizes; an exception leaves the journal for a later resume.
    The argument checks are labelstore/_writer_checks.py.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        num_classes: int,
        num_images: int,
        codec: LabelCodec | str | dict = "dense16",
        seed: int = 0,
        image_fingerprint: str | None = None,
        image_sizes: np.ndarray | tuple[int, int] | None = None,
        crop_policy: CropPolicy | None = None,
        mix_policy: MixPolicy | None = None,
        crops: str = DERIVED,
        orders: str = DERIVED,
        mix: str = DERIVED,
        source: str = "logits",
        source_temperature: float | None = None,
        teacher: Any = None,
        attrs: dict[str, Any] | None = None,
        pixels: dict[str, Any] | None = None,
        overwrite: bool = False,
        shard: tuple[int, int] | None = None,
    ):
        self.path = Path(path)
        self.num_classes = positive_int(num_classes, "num_classes", minimum=2)
        self.num_images = positive_int(num_images, "num_images")
        self.codec = make_codec(codec, self.num_classes)
        self.seed = positive_int(seed, "seed", minimum=0)
        self.image_sizes = check_sizes(image_sizes, self.num_images)
        self.crop_policy = crop_policy or default_crop_policy(self.image_sizes)
        self.mix_policy = mix_policy or MixPolicy()
        check_modes(crops, orders, mix, source, source_temperature, self.image_sizes is not None)
        self.header = {
            "num_classes": self.num_classes,
            "num_images": self.num_images,
            "seed": self.seed,
            "image_fingerprint": image_fingerprint or "",
            "crops": crops,
            "orders": orders,
            "mix": mix if self.mix_policy.kind != "none" else NONE,
            "crop_policy": self.crop_policy.to_dict(),
            "mix_policy": self.mix_policy.to_dict(),
            "source": source,
            "source_temperature": float(source_temperature) if source_temperature else None,
            "teacher": teacher,
            "codec": self.codec.get_config(),
            "attrs": attrs or {},
            "pixels": pixels,
        }
        try:
            json.dumps(self.header)
        except TypeError as exc:
            raise LabelStoreError(f"teacher, attrs and pixels must be JSON-serialisable: {exc}") from None
        arrays = {f"codec/{k}": v for k, v in self.codec.get_arrays().items()}
        if self.image_sizes is not None:
            arrays["image_sizes"] = self.image_sizes

        if self.path.exists() and not overwrite:
            raise LabelStoreError(f"{self.path} already exists; choose another path or pass overwrite=True (--force)")
        self.shard = check_shard(shard, self.path)
        self.journal = Journal(journal_dir(self.path, self.shard))
        self._epochs: dict[int, tuple[int, np.ndarray | None]] = {}
        self._entries: dict[tuple[int, int], BatchEntry] = {}
        self._present: dict[int, np.ndarray] = {}  # partial epochs: the batches they will hold
        if self.journal.exists():
            self._resume(arrays)
        else:
            self.journal.create(self.header, {k.replace("/", "."): v for k, v in arrays.items()})
        self._finalized = False

    # -- settings ---------------------------------------------------------------------
    def set_pixels(self, pixels: dict[str, Any]) -> None:
        """Record how the teacher's pixels were made (``loaders.contract``), before any batch is
        written; a resumed journal must have been recorded the same way."""
        pixels = json.loads(json.dumps(pixels))
        current = self.header.get("pixels")
        if current == pixels:
            return
        if current is not None:
            diff = sorted(k for k in set(current) | set(pixels) if current.get(k) != pixels.get(k))
            raise LabelStoreError(
                f"{self.journal.dir} was recorded with other pixel settings ({', '.join(diff)}: "
                f"{ {k: current.get(k) for k in diff} } vs { {k: pixels.get(k) for k in diff} }); resume with the same "
                "settings, or delete that directory to start over")
        if self._entries:
            raise LabelStoreError(f"{self.journal.dir} already holds batches recorded without pixel settings; "
                                  "delete it to start over")
        self.header["pixels"] = pixels
        self.journal.rewrite_header(self.header)

    def _resume(self, arrays: dict[str, np.ndarray]) -> None:
        old_header, old_arrays = self.journal.read_header()
        if self.header["pixels"] is None and old_header.get("pixels") is not None:
            self.header["pixels"] = old_header["pixels"]  # recorded by set_pixels; checked again when it is called
        check_resumable(self.header, arrays, old_header, old_arrays, self.journal.dir)
        epochs, entries, present = self.journal.scan()
        self._epochs = epochs
        self._present = present
        self._entries = {(e.epoch, e.batch): e for e in entries}

    # -- epochs -------------------------------------------------------------------------
    def begin_epoch(self, epoch: int, batch_size: int, order: np.ndarray | None = None, *,
                    batches=None) -> np.ndarray:
        """Declare an epoch's batch size (and its order, when orders are explicit); returns the order.

        ``batches``: the batch indices this epoch will hold, when it is partial (LPLD's label
        pools end in an epoch of which only the first batches were kept); default all of them.
        Calling it again for an epoch already declared (e.g. after a resume) is allowed when
        the batch size, order and batches are the same.
        """
        epoch = positive_int(epoch, "epoch", minimum=0)
        batch_size = positive_int(batch_size, "batch_size")
        if self.header["orders"] == EXPLICIT:
            if order is None:
                raise LabelStoreError("orders are explicit: pass the epoch's sample order to begin_epoch")
            order = np.asarray(order, dtype=np.int64)
            if order.shape != (self.num_images,) or not np.array_equal(np.sort(order), np.arange(self.num_images)):
                raise LabelStoreError(f"an epoch order must be a permutation of range({self.num_images})")
        elif order is not None and not np.array_equal(order, draw_order(self.seed, epoch, self.num_images)):
            raise LabelStoreError("orders are derived from the seed; the order given differs (use orders='explicit')")
        present = check_present(batches, -(-self.num_images // batch_size), epoch)
        if epoch in self._epochs:
            old_bs, old_order = self._epochs[epoch]
            old_present = self._present.get(epoch)
            if old_bs != batch_size or (old_order is not None and not np.array_equal(old_order, order)) or not (
                    (old_present is None and present is None)
                    or (old_present is not None and present is not None and np.array_equal(old_present, present))):
                raise LabelStoreError(f"epoch {epoch} was already begun with another batch size, order or set of batches")
        else:
            self.journal.append_epoch(epoch, batch_size, order if self.header["orders"] == EXPLICIT else None)
            if present is not None:
                self.journal.append_present(epoch, present)
                self._present[epoch] = present
            self._epochs[epoch] = (batch_size, order if self.header["orders"] == EXPLICIT else None)
        return self.order(epoch)

    def stored_batches(self, epoch: int) -> np.ndarray:
        """The batch indices epoch ``epoch`` holds (all of them unless it was begun as partial)."""
        present = self._present.get(epoch)
        return np.arange(self.num_batches(epoch)) if present is None else present

    def order(self, epoch: int) -> np.ndarray:
        bs_order = self._epoch(epoch)
        return bs_order[1] if bs_order[1] is not None else draw_order(self.seed, epoch, self.num_images)

    def num_batches(self, epoch: int) -> int:
        return -(-self.num_images // self._epoch(epoch)[0])

    def batch_indices(self, epoch: int, batch: int) -> np.ndarray:
        """The image ids of ``batch`` in ``epoch``, in their batch positions."""
        bs = self._epoch(epoch)[0]
        self._check_batch(epoch, batch)
        return self.order(epoch)[batch * bs : (batch + 1) * bs]

    def derived_crops(self, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self.batch_indices(epoch, batch)
        return draw_crops(self.crop_policy, self.seed, epoch, idx, self.image_sizes[idx])

    def derived_mix(self, epoch: int, batch: int) -> Mix | None:
        n = len(self.batch_indices(epoch, batch))
        return draw_mix(self.mix_policy, self.crop_policy.size, self.seed, epoch, batch, n)

    def _epoch(self, epoch: int):
        if epoch not in self._epochs:
            raise LabelStoreError(f"epoch {epoch} has not been begun; call begin_epoch({epoch}, batch_size) first")
        return self._epochs[epoch]

    def _check_batch(self, epoch: int, batch: int) -> None:
        nb = self.num_batches(epoch)
        if not 0 <= batch < nb:
            raise LabelStoreError(f"batch {batch} is out of range: epoch {epoch} has {nb} batches (0..{nb - 1})")

    def owns(self, batch: int) -> bool:
        """Whether this writer writes ``batch``: always, unless it is one rank's shard (batch % world == rank)."""
        return self.shard is None or batch % self.shard[1] == self.shard[0]

    # -- batches ------------------------------------------------------------------------
    def is_written(self, epoch: int, batch: int) -> bool:
        return (epoch, batch) in self._entries

    @property
    def written(self) -> set[tuple[int, int]]:
        return set(self._entries)

    @property
    def data_nbytes(self) -> int:
        """Bytes of chunk data written so far (labels, crops, mix): the file less its tables."""
        return sum(en.label_nbytes + en.crop_nbytes + en.mix_nbytes for en in self._entries.values())

    def write_batch(
        self,
        epoch: int,
        batch: int,
        logits: np.ndarray,
        *,
        boxes: np.ndarray | None = None,
        flips: np.ndarray | None = None,
        mix: Mix | None = None,
    ) -> None:
        """Append one batch. Everything is checked before a byte is written."""
        if self._finalized:
            raise LabelStoreError("this label set is finalized; open a new LabelWriter to write more")
        self._epoch(epoch)
        self._check_batch(epoch, batch)
        present = self._present.get(epoch)
        if present is not None and not (present == batch).any():
            raise LabelStoreError(f"batch {batch} is not among the batches partial epoch {epoch} was begun with "
                                  f"({describe_ranges(present)})")
        if (epoch, batch) in self._entries:
            raise LabelStoreError(
                f"epoch {epoch} batch {batch} is already written; skip batches where is_written() is true"
            )
        if not self.owns(batch):
            raise LabelStoreError(
                f"batch {batch} belongs to rank {batch % self.shard[1]}, not to this shard (rank {self.shard[0]}); "
                "skip batches where owns() is false"
            )
        idx = self.batch_indices(epoch, batch)
        n = len(idx)
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape != (n, self.num_classes):
            raise LabelStoreError(
                f"epoch {epoch} batch {batch} needs logits of shape ({n}, {self.num_classes}), got {logits.shape}; "
                "check the teacher's class count and the batch size"
            )
        label_bytes = self.codec.encode(logits)  # rejects NaN/Inf
        sizes = None if self.image_sizes is None else (lambda: self.image_sizes[idx])  # checked against explicit boxes
        crop_bytes = crop_section(self.header["crops"], epoch, batch, n, boxes, flips,
                                  lambda: self.derived_crops(epoch, batch), sizes)
        mix_bytes = mix_section(self.header["mix"], n, mix, lambda: self.derived_mix(epoch, batch))
        entry = self.journal.append_batch(epoch, batch, n, label_bytes, crop_bytes, mix_bytes)
        self._entries[(epoch, batch)] = entry

    # -- finishing ----------------------------------------------------------------------
    def missing(self) -> list[tuple[int, int]]:
        """(epoch, batch) pairs declared but not written yet."""
        return [
            (e, int(b)) for e in sorted(self._epochs) for b in self.stored_batches(e)
            if self.owns(int(b)) and (e, int(b)) not in self._entries
        ]

    def finalize(self) -> Path | None:
        """Check completeness, build the HDF5 file atomically, remove the journal; returns the path.

        A shard (one rank of several) only checks and seals its own batches and returns None;
        ``labelstore.merge_shards(path)`` then builds the file from all the shards.
        """
        from ._build import build_file  # local: keeps h5py out of the writer's import path

        if self._finalized:
            return None if self.shard else self.path
        epochs = sorted(self._epochs)
        if not epochs:
            raise LabelStoreError("nothing to finalize: no epoch was begun")
        if epochs != list(range(len(epochs))):
            raise LabelStoreError(f"stored epochs must be 0..E-1 without gaps, got {epochs}")
        missing = self.missing()
        if missing:
            shown = ", ".join(f"({e}, {b})" for e, b in missing[:5])
            raise LabelStoreError(
                f"{len(missing)} batches are not written yet (epoch, batch): {shown}{' …' if len(missing) > 5 else ''}; "
                "write them, then finalize"
            )
        self.journal.sync()
        self.journal.close()
        self._finalized = True
        if self.shard is not None:
            self.journal.mark_done()
            return None
        build_file(self.path, self.header, self.codec, self.image_sizes, self._epochs, self._entries, self.journal.read_chunk, self.journal.dir)
        shutil.rmtree(self.journal.dir, ignore_errors=True)
        return self.path

    def close(self) -> None:
        """Stop writing without finalizing; the journal stays for a later resume."""
        self.journal.close()

    def __enter__(self) -> "LabelWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.close()

