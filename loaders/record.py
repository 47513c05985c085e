"""Record mode: relabel *through the loader*, so replay later shows the student the same pixels.

For each stored epoch and batch, the crops come from the writer's seed (``derived_crops``, or
drawn from the same seed and stored when the writer keeps explicit crops), the pixels from
the backend, the mix from ``derived_mix`` through :func:`loaders.mixing.to_model_input` — the
very code :class:`~loaders.replay.ReplayLoader` runs — and the teacher callback labels them.
Batches already written (a resumed run) are skipped.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from labelstore import LabelStoreError, LabelWriter, check_fingerprint, draw_crops, draw_order

from .backend import CropBatch, PixelBackend
from .mixing import to_model_input
from .replay import IMAGENET_MEAN, IMAGENET_STD


def record_labels(
    writer: LabelWriter,
    backend: PixelBackend,
    teacher_fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    gray: bool = False,
    segment: int = 64,
    progress: bool = True,
) -> dict:
    """Label ``epochs`` epochs of crops with ``teacher_fn`` (float images -> logits) into ``writer``.

    Returns a summary: epochs, batches written / skipped (already in the journal), records,
    seconds, records per second. The caller finalizes the writer (or uses it as a context manager).
    """
    _check(writer, backend)
    size = writer.crop_policy.size
    explicit_crops = writer.header["crops"] == "explicit"
    explicit_orders = writer.header["orders"] == "explicit"
    sizes = np.asarray(backend.image_sizes)
    kw = dict(mean=mean, std=std, device=device, dtype=dtype, channels_last=channels_last, gray=gray)
    todo = []
    for e in range(int(epochs)):
        order = draw_order(writer.seed, e, writer.num_images) if explicit_orders else None
        writer.begin_epoch(e, batch_size, order)
        todo += [(e, b) for b in range(writer.num_batches(e)) if not writer.is_written(e, b)]
    total = sum(writer.num_batches(e) for e in range(int(epochs)))
    start, records = time.perf_counter(), 0
    bar = tqdm(total=len(todo), desc="relabel", unit="batch", disable=not progress or not todo)
    segment = max(1, int(segment))
    for s in range(0, len(todo), segment):
        seg = []
        for e, b in todo[s : s + segment]:
            idx = writer.batch_indices(e, b)
            if explicit_crops:  # drawn from the same seed as derived crops would be, then stored
                boxes, flips = draw_crops(writer.crop_policy, writer.seed, e, idx, sizes[idx])
            else:
                boxes, flips = writer.derived_crops(e, b)
            mix = writer.derived_mix(e, b) if writer.header["mix"] != "none" else None
            seg.append((e, b, CropBatch(idx, boxes, flips), mix))
        for (e, b, crop, mix), px in zip(seg, backend.iter_batches([c for _, _, c, _ in seg], size)):
            with torch.no_grad():
                logits = teacher_fn(to_model_input(px, mix, **kw))
            logits = _as_numpy(logits, len(crop), writer.num_classes, e, b)
            extra = dict(boxes=crop.boxes, flips=crop.flips) if explicit_crops else {}
            if writer.header["mix"] == "explicit":
                extra["mix"] = mix
            writer.write_batch(e, b, logits, **extra)
            records += len(crop)
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    summary = dict(epochs=int(epochs), batches_written=len(todo), batches_skipped=total - len(todo),
                   records=records, seconds=round(seconds, 3), records_per_s=round(records / seconds, 1) if records else 0.0)
    if progress:
        print(f"relabel: {summary['batches_written']} batches ({records} crops) written, "
              f"{summary['batches_skipped']} already done, {summary['records_per_s']} crops/s")
    return summary


def _check(writer: LabelWriter, backend: PixelBackend) -> None:
    if int(backend.num_images) != writer.num_images:
        raise LabelStoreError(f"the writer is for {writer.num_images} images but the backend holds "
                              f"{backend.num_images}; create the writer with num_images={backend.num_images}")
    check_fingerprint(writer.header["image_fingerprint"] or None, getattr(backend, "fingerprint", None),
                      "the backend's images")
    if writer.image_sizes is not None and not np.array_equal(writer.image_sizes, np.asarray(backend.image_sizes)):
        raise LabelStoreError("the writer's image_sizes differ from the backend's images; "
                              "create the writer with image_sizes=backend.image_sizes")


def _as_numpy(logits, n: int, num_classes: int, e: int, b: int) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    logits = np.asarray(logits, np.float32)
    if logits.shape != (n, num_classes):
        raise LabelStoreError(f"the teacher returned shape {logits.shape} for epoch {e} batch {b}; "
                              f"expected ({n}, {num_classes}) logits (one row per image)")
    return logits
