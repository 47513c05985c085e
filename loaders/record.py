"""Record mode: relabel *through the loader*, so replay later shows the student the same pixels.

For each stored epoch and batch, the crops come from the writer's seed (``derived_crops``, or
drawn from the same seed and stored when the writer keeps explicit crops), the pixels from
the backend, the mix from ``derived_mix`` through :func:`loaders.mixing.to_model_input` — the
very code :class:`~loaders.replay.ReplayLoader` runs — and the teacher callback labels them.
Batches already written (a resumed run) are skipped. Under ``torch.distributed`` the teacher
work is sharded by rank, in one of two ways: every rank holds a shard writer
(``LabelWriter(..., shard=(rank, world))``) and writes its own batches, merged afterwards by
``labelstore.merge_shards`` (nothing crosses the network); or only rank 0 holds a writer and
gathers the other ranks' logits.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from labelstore import LabelStoreError, LabelWriter, check_fingerprint, draw_crops, draw_order

from .backend import CropBatch, PixelBackend
from .contract import pixel_settings
from .distributed import resolve_rank
from .mixing import to_model_input
from .replay import IMAGENET_MEAN, IMAGENET_STD


def record_labels(
    writer: LabelWriter | None,
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
    rank: int | None = None,
    world_size: int | None = None,
) -> dict:
    """Label ``epochs`` epochs of crops with ``teacher_fn`` (float images -> logits) into ``writer``.

    Under ``torch.distributed`` (or with ``rank``/``world_size``) every rank runs the teacher on
    its share of each segment's batches and rank 0, the only one holding a writer (pass
    ``writer=None`` elsewhere), gathers and writes them. Returns a summary: epochs, batches
    written / skipped (already in the journal), records, seconds, records per second. The
    caller finalizes the writer (or uses it as a context manager).
    """
    rank, world = resolve_rank(rank, world_size)
    kw = dict(mean=mean, std=std, device=device, dtype=dtype, channels_last=channels_last, gray=gray)
    if writer is not None:  # the record↔replay contract: replay defaults to (and checks) these pixels
        writer.set_pixels(pixel_settings(backend, crop_size=writer.crop_policy.size, mean=mean, std=std, gray=gray,
                                         dtype=dtype))
    if writer is not None and writer.shard is not None:
        return _record_shard(writer, backend, teacher_fn, int(epochs), batch_size, kw, segment, progress)
    meta = _plan(writer, backend, int(epochs), batch_size) if rank == 0 else None
    if rank != 0 and writer is not None:
        meta = {"error": "only rank 0 holds the LabelWriter; pass writer=None on the other ranks"}
    meta = _broadcast(meta, world)
    if "error" in meta:
        raise LabelStoreError(meta["error"])
    todo, size = meta["todo"], meta["size"]
    start, records = time.perf_counter(), 0
    bar = tqdm(total=len(todo), desc="relabel", unit="batch", disable=not progress or not todo or rank != 0)
    step = max(1, int(segment)) * world
    for s in range(0, len(todo), step):
        seg = _broadcast(_crops(writer, backend, todo[s : s + step]) if rank == 0 else None, world)
        mine = seg[rank::world]  # this rank's share; rank 0 writes all of them in order
        out = [logits for *_, logits in _label(backend, teacher_fn, mine, size, kw, meta["num_classes"])]
        shares = _gather(out, world, rank)
        if rank == 0:
            for i, (e, b, crop, mix) in enumerate(seg):
                _write(writer, meta, e, b, crop, mix, shares[i % world][i // world])
                records += len(crop)
                bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    summary = dict(epochs=int(epochs), batches_written=len(todo), batches_skipped=meta["total"] - len(todo),
                   records=records, seconds=round(seconds, 3), records_per_s=round(records / seconds, 1) if records else 0.0)
    if progress and rank == 0:
        print(f"relabel: {summary['batches_written']} batches ({records} crops) written, "
              f"{summary['batches_skipped']} already done, {summary['records_per_s']} crops/s")
    return summary


def _record_shard(writer: LabelWriter, backend: PixelBackend, teacher_fn, epochs: int, batch_size: int,
                  kw: dict, segment: int, progress: bool) -> dict:
    """One rank's shard: the batches it owns, written to its own journal; no communication."""
    meta = _plan(writer, backend, epochs, batch_size)
    if "error" in meta:
        raise LabelStoreError(meta["error"])
    todo = [(e, b) for e, b in meta["todo"] if writer.owns(b)]
    start, records = time.perf_counter(), 0
    bar = tqdm(total=len(todo), desc=f"relabel rank {writer.shard[0]}", unit="batch", disable=not progress or not todo)
    for s in range(0, len(todo), max(1, int(segment))):
        seg = _crops(writer, backend, todo[s : s + max(1, int(segment))])
        for e, b, crop, mix, logits in _label(backend, teacher_fn, seg, meta["size"], kw, meta["num_classes"]):
            _write(writer, meta, e, b, crop, mix, logits)
            records += len(crop)
            bar.update(1)
    bar.close()
    seconds = time.perf_counter() - start
    owned = sum(1 for e in range(epochs) for b in range(writer.num_batches(e)) if writer.owns(b))
    return dict(epochs=epochs, batches_written=len(todo), batches_skipped=owned - len(todo), records=records,
                seconds=round(seconds, 3), records_per_s=round(records / seconds, 1) if records else 0.0)


def _label(backend: PixelBackend, teacher_fn, seg, size, kw: dict, num_classes: int):
    """Yield (epoch, batch, crop, mix, logits) for a segment: pixels from the backend, the mix and
    normalisation of ``to_model_input`` (the replay path), the teacher's logits as numpy."""
    pixels = backend.iter_batches([c for _, _, c, _ in seg], size)
    done = 0
    try:  # the generator goes first in zip, so it runs to its end
        for px, (e, b, crop, mix) in zip(pixels, seg):
            with torch.no_grad():
                logits = teacher_fn(to_model_input(px, mix, **kw))
            done += 1
            yield e, b, crop, mix, _as_numpy(logits, len(crop), num_classes, e, b)
    finally:
        getattr(pixels, "close", lambda: None)()
    if done != len(seg):
        raise LabelStoreError(f"the backend yielded {done} batches for {len(seg)} crop batches; "
                              "a PixelBackend must yield one tensor per CropBatch")


def _write(writer: LabelWriter, meta: dict, e: int, b: int, crop: CropBatch, mix, logits: np.ndarray) -> None:
    extra = dict(boxes=crop.boxes, flips=crop.flips) if meta["explicit_crops"] else {}
    if meta["explicit_mix"]:
        extra["mix"] = mix
    writer.write_batch(e, b, logits, **extra)


def _plan(writer: LabelWriter | None, backend: PixelBackend, epochs: int, batch_size: int) -> dict:
    """Rank 0: check, begin every epoch, list the batches not written yet (or say what is wrong)."""
    try:
        if writer is None:
            raise LabelStoreError("rank 0 needs the LabelWriter (writer=None is for the other ranks)")
        _check(writer, backend)
        explicit_orders = writer.header["orders"] == "explicit"
        for e in range(epochs):
            writer.begin_epoch(e, batch_size, draw_order(writer.seed, e, writer.num_images) if explicit_orders else None)
    except LabelStoreError as exc:
        return {"error": str(exc)}
    todo = [(e, b) for e in range(epochs) for b in range(writer.num_batches(e)) if not writer.is_written(e, b)]
    return dict(todo=todo, total=sum(writer.num_batches(e) for e in range(epochs)), size=writer.crop_policy.size,
                num_classes=writer.num_classes, explicit_crops=writer.header["crops"] == "explicit",
                explicit_mix=writer.header["mix"] == "explicit")


def _crops(writer: LabelWriter, backend: PixelBackend, batches) -> list[tuple[int, int, CropBatch, object]]:
    """Crop records and mix of each (epoch, batch), drawn from the writer's seed."""
    sizes = np.asarray(backend.image_sizes)
    seg = []
    for e, b in batches:
        idx = writer.batch_indices(e, b)
        if writer.header["crops"] == "explicit":  # the same draw derived crops would use, then stored
            boxes, flips = draw_crops(writer.crop_policy, writer.seed, e, idx, sizes[idx])
        else:
            boxes, flips = writer.derived_crops(e, b)
        mix = writer.derived_mix(e, b) if writer.header["mix"] != "none" else None
        seg.append((e, b, CropBatch(idx, boxes, flips), mix))
    return seg


def _broadcast(obj, world: int):
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj, world: int, rank: int):
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


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
