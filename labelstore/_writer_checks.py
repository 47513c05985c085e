"""What a LabelWriter checks of what it is given, as functions of their arguments: the settings
at open, a resumed journal's settings, a partial epoch's batches, and each batch's crops and
mix (checked against the label set's modes, then encoded). Each raises LabelStoreError with
the message the user acts on; labelstore/writer.py calls them in the order it always has, so
the first problem found is the one reported.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from . import _chunk
from ._format import DERIVED, EXPLICIT, NONE
from ._journal import shard_dirs
from .codecs import LabelCodec, get_codec, parse_codec_spec
from .crops import CropPolicy, Mix
from .errors import LabelStoreError

SOURCES = ("logits", "probabilities")


# -- settings at open -------------------------------------------------------------------
def positive_int(value, name: str, minimum: int = 1) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise LabelStoreError(f"{name} must be an integer, got {value!r}") from None
    if v != value or v < minimum:
        raise LabelStoreError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def make_codec(codec, num_classes: int) -> LabelCodec:
    if isinstance(codec, str):
        codec = parse_codec_spec(codec, num_classes)
    elif isinstance(codec, dict):
        codec = get_codec(codec)
    if not isinstance(codec, LabelCodec):
        raise LabelStoreError(f"codec must be a LabelCodec, a spec string or a config dict, got {type(codec).__name__}")
    if codec.num_classes != num_classes:
        raise LabelStoreError(f"codec is for {codec.num_classes} classes but the label set has {num_classes}")
    if not codec.is_fitted:
        raise LabelStoreError(f"codec {codec.codec_id!r} must be fitted on a sample of logits first (codec.fit(sample))")
    return codec


def check_sizes(sizes, num_images: int) -> np.ndarray | None:
    if sizes is None:
        return None
    arr = np.asarray(sizes, dtype=np.int64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (num_images, 2))
    if arr.shape != (num_images, 2) or (arr < 1).any():
        raise LabelStoreError(f"image_sizes must be (H, W) or an array ({num_images}, 2) of positive sizes, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.uint32)


def default_crop_policy(image_sizes: np.ndarray | None) -> CropPolicy:
    """Crops resized to the images' own size (a 32x32 set is labelled at 32 px, not 224)."""
    if image_sizes is None:
        return CropPolicy()  # explicit crops of unknown images: the ImageNet synthetic-set size
    first = image_sizes[0]
    if not (image_sizes == first).all():
        raise LabelStoreError("the images have different sizes, so there is no natural crop size: pass "
                              "crop_policy=CropPolicy(size=(H, W)) with the size the teacher should see")
    return CropPolicy(size=(int(first[0]), int(first[1])))


def check_modes(crops: str, orders: str, mix: str, source: str, source_temperature, has_sizes: bool) -> None:
    """The derived/explicit modes and the label source, consistent with each other."""
    for name, mode in (("crops", crops), ("orders", orders)):
        if mode not in (DERIVED, EXPLICIT):
            raise LabelStoreError(f"{name} must be 'derived' or 'explicit', got {mode!r}")
    if mix not in (DERIVED, EXPLICIT):
        raise LabelStoreError(f"mix must be 'derived' or 'explicit', got {mix!r}")
    if source not in SOURCES:
        raise LabelStoreError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "probabilities" and not source_temperature:
        raise LabelStoreError("a probability source needs source_temperature (the T its softmax used)")
    if crops == DERIVED and not has_sizes:
        raise LabelStoreError(
            "derived crops need the images' sizes: pass image_sizes=(H, W) for a fixed-size set "
            "or an (N, 2) array, or use crops='explicit'"
        )


def check_shard(shard, path: Path) -> tuple[int, int] | None:
    """``(rank, world)``, or None when not sharded; refuses a world size other than an interrupted run's."""
    if shard is None:
        return None
    rank, world = (int(x) for x in shard)
    if not 0 <= rank < world:
        raise LabelStoreError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
    others = sorted({w for _, _, w in shard_dirs(path)} - {world})
    if others:  # caught here, before any teacher work, rather than at merge time
        raise LabelStoreError(
            f"{path.name}.shards/ holds an interrupted run of world size {others[0]}, not {world}; "
            f"resume it with {others[0]} processes (torchrun --nproc-per-node {others[0]}) or delete "
            f"{path.name}.shards/ to start over")
    return (rank, world)


# -- resuming ---------------------------------------------------------------------------
def check_resumable(header: dict, arrays: dict[str, np.ndarray], old_header: dict, old_arrays: dict,
                    journal_dir: Path) -> None:
    """The journal found was written with these very settings (header and arrays)."""
    same_arrays = old_arrays.keys() == {k.replace("/", ".") for k in arrays} and all(
        np.array_equal(old_arrays[k.replace("/", ".")], v) for k, v in arrays.items()
    )
    if old_header != json.loads(json.dumps(header)) or not same_arrays:
        diff = sorted(k for k in header if old_header.get(k) != json.loads(json.dumps(header)).get(k))
        raise LabelStoreError(
            f"{journal_dir} holds an unfinished label set with different settings "
            f"({', '.join(diff) or 'codec arrays or image sizes'}); resume with the same settings, "
            "or delete that directory to start over"
        )


# -- epochs and batches -----------------------------------------------------------------
def check_present(batches, nb: int, epoch: int) -> np.ndarray | None:
    """The sorted batch indices of a partial epoch, or None for a complete one."""
    if batches is None:
        return None
    arr = np.asarray(list(batches) if not isinstance(batches, np.ndarray) else batches, dtype=np.int64).reshape(-1)
    if len(arr) == 0:
        raise LabelStoreError(f"epoch {epoch}: batches= is empty; leave an epoch with no batches out instead")
    if len(np.unique(arr)) != len(arr) or (arr < 0).any() or (arr >= nb).any():
        raise LabelStoreError(f"epoch {epoch}: batches= must be distinct batch indices in 0..{nb - 1}, got {arr[:8].tolist()}")
    arr = np.sort(arr)
    return None if len(arr) == nb else arr


def crop_section(mode: str, epoch: int, batch: int, n: int, boxes, flips,
                 derived: Callable[[], tuple[np.ndarray, np.ndarray]], sizes: Callable[[], np.ndarray] | None) -> bytes:
    """The batch's crop bytes: none when derived (boxes given must be the derived ones), else the
    boxes and flips checked and encoded. ``derived`` / ``sizes`` are called only when needed."""
    if mode == DERIVED:
        if boxes is not None:
            want_boxes, want_flips = derived()
            if not (np.array_equal(boxes, want_boxes) and (flips is None or np.array_equal(flips, want_flips))):
                raise LabelStoreError(
                    f"epoch {epoch} batch {batch}: the crops given differ from those derived from the seed; "
                    "draw crops with LabelWriter.derived_crops, or use crops='explicit'"
                )
        return b""
    if boxes is None:
        raise LabelStoreError("crops are explicit: pass boxes= (n, 4) (top, left, height, width) and flips=")
    boxes = np.asarray(boxes)
    flips = np.zeros(n, bool) if flips is None else np.asarray(flips, bool)
    if boxes.shape != (n, 4) or flips.shape != (n,) or (boxes[:, 2:] < 1).any() or (boxes[:, :2] < 0).any():
        raise LabelStoreError(f"boxes must be ({n}, 4) with top, left >= 0 and height, width >= 1; flips ({n},)")
    if sizes is not None:
        hw = sizes().astype(np.int64)
        if ((boxes[:, 0] + boxes[:, 2]) > hw[:, 0]).any() or ((boxes[:, 1] + boxes[:, 3]) > hw[:, 1]).any():
            raise LabelStoreError(f"epoch {epoch} batch {batch}: a crop box reaches outside its image")
    return _chunk.encode_crops(boxes, flips)


def mix_section(mode: str, n: int, mix: Mix | None, derived: Callable[[], Mix | None]) -> bytes:
    """The batch's mix bytes: none without mixing or when derived (a mix given must be the derived
    one), else the mix checked and encoded."""
    if mode == NONE:
        if mix is not None:
            raise LabelStoreError("this label set has no mixing (mix_policy kind 'none'); don't pass mix=")
        return b""
    if mode == DERIVED:
        if mix is not None and mix != derived():
            raise LabelStoreError("the mix given differs from the one derived from the seed; use mix='explicit'")
        return b""
    if mix is not None:
        partner = np.asarray(mix.partner)
        if partner.shape != (n,) or (partner < 0).any() or (partner >= n).any():
            raise LabelStoreError(f"mix.partner must hold {n} positions within the batch (0..{n - 1})")
    return _chunk.encode_mix(mix)
