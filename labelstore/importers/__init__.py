"""Importers for the label layouts of the public codebases (SRe2L, LPLD, CV-DD, HALD, FKD)
and for plain arrays of teacher outputs. ``open_source`` detects the layout (or takes it
from ``layout=``) and returns a reader that yields one batch at a time.

Importers read ``torch.save`` pickles: see ``_common`` for the trust assumption.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import LabelStoreError
from . import arrays, fkd, hald, sre2l
from ._common import ImportedBatch, SourceInfo, SourceReader, boxes_to_coords, coords_to_boxes

LAYOUTS = ("sre2l", "lpld", "cvdd", "hald", "fkd", "arrays")

__all__ = ["LAYOUTS", "detect_layout", "open_source", "ImportedBatch", "SourceInfo", "SourceReader",
           "coords_to_boxes", "boxes_to_coords"]


def detect_layout(path: str | Path) -> str:
    """The layout of ``path``; a LabelStoreError when it is unknown or mixed."""
    path = Path(path)
    if not path.exists():
        raise LabelStoreError(f"{path} does not exist")
    found = [name for d in (sre2l.detect, hald.detect, fkd.detect, arrays.detect) if (name := d(path))]
    if len(found) > 1:
        raise LabelStoreError(
            f"{path} mixes layouts ({' and '.join(found)}: e.g. epoch_<e>/ folders beside epoch_<e>.tar files); "
            "move one set elsewhere or pass --from LAYOUT"
        )
    if not found:
        raise LabelStoreError(
            f"cannot tell the layout of {path}: expected epoch_<e>/batch_<b>.tar (SRe2L, LPLD, CV-DD), "
            "epoch_<e>.tar (HALD), <class>/<image>.tar (FKD) or one .npz/.npy/.h5/.pt file of arrays; "
            "pass --from LAYOUT to force one"
        )
    return found[0]


def open_source(path: str | Path, layout: str | None = None, *, image_size=None, num_classes: int | None = None,
                batch_size: int | None = None, order: str = "auto", order_from=None, source_temperature: float | None = None,
                skip_bad: bool = False, allow_pickle: bool = False, max_memory: int = 1 << 30,
                num_images: int | None = None) -> SourceReader:
    """A reader for the label set at ``path`` (layout detected unless given). ``num_images``:
    the size of the image set the labels belong to, when known (checked against the files)."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout not in LAYOUTS:
        raise LabelStoreError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if not path.exists():
        raise LabelStoreError(f"{path} does not exist")
    size = 224 if image_size is None else image_size
    if layout in ("sre2l", "lpld", "cvdd"):
        r = sre2l.SRe2LReader(path, layout=layout, image_size=size, order=order, order_from=order_from,
                              skip_bad=skip_bad, allow_pickle=allow_pickle, num_images=num_images)
    elif layout == "hald":
        r = hald.HALDReader(path, image_size=size, order=order, order_from=order_from, skip_bad=skip_bad,
                            source_temperature=source_temperature or 20.0, allow_pickle=allow_pickle,
                            num_images=num_images)
    elif layout == "fkd":
        r = fkd.FKDReader(path, image_size=image_size, num_classes=num_classes, batch_size=batch_size or 256,
                          source_temperature=source_temperature or 1.0, allow_pickle=allow_pickle, max_memory=max_memory)
    else:
        r = arrays.ArraysReader(path, image_size=size, batch_size=batch_size, allow_pickle=allow_pickle)
    if num_images is not None and r.info.num_images != int(num_images):
        raise LabelStoreError(f"{path} labels {r.info.num_images} images but the image set has {num_images}; "
                              "pair the labels with the image set they were made for")
    if num_classes is not None and layout != "fkd" and r.info.num_classes != num_classes:
        raise LabelStoreError(f"{path} holds {r.info.num_classes}-class labels but --num-classes is {num_classes}")
    if image_size is None and layout in ("sre2l", "lpld", "cvdd", "hald"):
        r.info.notes.append("assumed 224x224 images (the ImageNet synthetic-set size); pass --image-size otherwise")
    return r
