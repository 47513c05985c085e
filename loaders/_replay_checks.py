"""What ReplayLoader checks before it plans a step: the images match the labels, one batch
size, the images' classes when a schedule needs them, a pool when stored batches must be
reused; and where a saved position resumes. Each raises a LabelStoreError saying what to do."""
from __future__ import annotations

from typing import Any

import numpy as np

from labelstore import LabelFile, LabelStoreError

from .pools import LabelPool
from .schedules import Schedule


def check_images(labels: LabelFile, backend) -> None:
    """The backend holds the images the labels were made for (count, fingerprint, sizes)."""
    n = int(backend.num_images)
    if n != labels.num_images:
        raise LabelStoreError(
            f"the label file labels {labels.num_images} images but the backend holds {n}; "
            "pair the labels with the image set they were made from"
        )
    labels.check_images(getattr(backend, "fingerprint", None), "the backend's images")
    sizes = labels.image_sizes
    if sizes is not None and not np.array_equal(sizes, np.asarray(backend.image_sizes)):
        raise LabelStoreError("the backend's image sizes differ from those the labels were made for; "
                              "pair the labels with the image set they were made from")


def resolve_batch_size(labels: LabelFile, schedule: Schedule, epochs: int, batch_size: int | None) -> int:
    """The replay's batch size: the stored one (soft steps replay whole stored batches)."""
    stored = sorted({labels.batch_size(e) for e in range(labels.num_epochs)})
    if schedule.label_epochs(epochs) == 0:  # all hard: any batch size
        return int(batch_size or stored[0])
    if len(stored) > 1:
        raise LabelStoreError(f"the label file's epochs have different batch sizes {stored}; "
                              "replay needs one batch size: use a file relabelled with a single batch size")
    if batch_size is not None and int(batch_size) != stored[0]:
        raise LabelStoreError(
            f"batch_size={batch_size} but the label file stores batches of {stored[0]}: soft steps replay "
            f"whole stored batches (labels depend on batch composition); pass batch_size={stored[0]} or None"
        )
    return stored[0]


def resolve_class_labels(labels: LabelFile, backend, schedule: Schedule, labels_of_images) -> np.ndarray | None:
    """The images' class ids (given, else the backend's); required by hard, blend, drift and correct steps."""
    y = labels_of_images if labels_of_images is not None else getattr(backend, "labels", None)
    if y is None:
        if schedule.needs_class_labels:
            raise LabelStoreError(f"schedule '{schedule}' has hard-label steps (or blend / drift gating / correction) "
                                  "and needs the images' classes: pass labels_of_images= or a backend with labels")
        return None
    y = np.asarray(y)
    n, c = labels.num_images, labels.num_classes
    if y.shape != (n,) or y.dtype.kind not in "iu" or (y < 0).any() or (y >= c).any():
        raise LabelStoreError(f"labels_of_images must be {n} class ids in 0..{c - 1}")
    return y.astype(np.int64)


def check_pool(labels: LabelFile, pool: LabelPool | None, schedule: Schedule, epochs: int, label_epochs: int) -> None:
    """Without a pool, the schedule's label epochs must be whole stored epochs, no more than stored."""
    S = labels.num_epochs
    if pool is None and label_epochs > 0:
        partial = [e for e in range(min(S, label_epochs)) if not labels.is_complete(e)]
        if partial:
            raise LabelStoreError(
                f"stored epoch {partial[0]} is partial ({len(labels.stored_batches(partial[0]))} of "
                f"{labels.num_batches(partial[0])} batches, as LPLD's label pools end): replaying whole "
                "epochs would skip images; pass pool='replacement' (LPLD) or 'without_replacement' (HALD), "
                "which draw from exactly the stored batches")
    if pool is None and label_epochs > S:
        raise LabelStoreError(
            f"schedule '{schedule}' replays stored labels in {label_epochs} of {epochs} epochs but the "
            f"file stores {S}; pass a pool policy to reuse stored batches: pool='without_replacement' (HALD), "
            "'replacement' (LPLD) or 'cycle'"
        )


def resume_position(state: dict[str, Any], settings: dict[str, Any], epochs: int, steps_in) -> tuple[int, int]:
    """(epoch, steps to skip) from a saved state, after checking it was saved with the same plan."""
    if not isinstance(state, dict) or "epoch" not in state or "step" not in state:
        raise LabelStoreError("load_state_dict needs the dict state_dict() returned ({'epoch', 'step', 'plan'})")
    saved = state.get("plan") or {}
    diff = [k for k in settings if k in saved and saved[k] != settings[k]]
    if diff:
        said = "; ".join(f"{k}: saved {saved[k]!r}, now {settings[k]!r}" for k in diff)
        raise LabelStoreError(f"this position was saved by a loader that plans other steps ({said}); "
                              "resume with the settings and label file of the saved run")
    epoch, step = int(state["epoch"]), int(state["step"])
    if not 0 <= epoch <= epochs or step < 0:
        raise LabelStoreError(f"the saved position (epoch {epoch}, step {step}) is outside training's {epochs} epochs")
    if epoch < epochs and step >= steps_in(epoch):  # a finished epoch: continue with the next one
        epoch, step = epoch + 1, 0
    return epoch, step
