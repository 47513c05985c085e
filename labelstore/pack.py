"""``pack``: turn an existing label set (SRe2L, LPLD, CV-DD, HALD, FKD, arrays) into one
label file, streaming batch by batch.

Memory stays bounded whatever the input size: one source batch (HALD: one epoch file) is in
memory at a time, and learned codecs and ``--budget`` are fitted on a bounded sample drawn
first. Packing is resumable: the writer's journal survives an interruption and the same
command skips the batches already written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .codecs import LabelCodec, parse_codec_spec
from .crops import CropPolicy, MixPolicy
from .errors import LabelStoreError
from .importers import SourceReader, open_source
from .writer import LabelWriter

SAMPLE_RECORDS = 20_000  # logits sampled for codec fitting and fidelity: ~80 MB at 1000 classes


@dataclass
class PackResult:
    path: Path
    layout: str
    records: int
    stored_epochs: int
    source_epochs: list[int]
    codec: dict
    file_bytes: int
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: object = None  # budget.Plan when --budget chose the configuration
    resumed_batches: int = 0


def parse_size(text: str | int | float) -> int:
    """'285MB', '1.5 GB', '300k', '123456' -> bytes (decimal units; KiB/MiB/GiB binary)."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().replace(" ", "")
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    num = s.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = s[len(num):].lower()
    try:
        value = float(num)
    except ValueError:
        value = -1
    if unit not in units or value <= 0:
        raise LabelStoreError(f"cannot read the size {text!r}; write e.g. 285MB, 1.5GB or 300000000")
    return int(value * units[unit])


def resolve_fingerprint(value: str | None) -> str | None:
    """``--fingerprint``: a 'sha256:…' string, or an .npy/.npz of uint8 images to fingerprint."""
    if not value:
        return None
    p = Path(value)
    if p.suffix.lower() in (".npy", ".npz") and p.is_file():
        from .fingerprint import image_set_fingerprint

        arr = np.load(p, mmap_mode="r") if p.suffix.lower() == ".npy" else np.load(p)["images"]
        return image_set_fingerprint(arr)
    if not value.startswith("sha256:"):
        raise LabelStoreError(f"--fingerprint takes 'sha256:…' (see labelstore.image_set_fingerprint) or an .npy of uint8 images, got {value!r}")
    return value


def pack(
    src: str | Path,
    out: str | Path,
    *,
    layout: str | None = None,
    codec: str | LabelCodec | None = None,
    budget: int | str | None = None,
    num_classes: int | None = None,
    num_images: int | None = None,
    images: str | Path | None = None,
    image_size=None,
    fingerprint: str | None = None,
    batch_size: int | None = None,
    order: str = "auto",
    order_from: str | Path | None = None,
    source_temperature: float | None = None,
    skip_bad: bool = False,
    allow_pickle: bool = False,
    sample_records: int = SAMPLE_RECORDS,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> PackResult:
    """Pack the label set at ``src`` into the label file ``out``; returns what was written.

    ``images``: the image set the labels belong to (.npy/.npz, .beton or an image folder): its
    count, sizes and fingerprint are used and checked. ``codec`` with ``budget``: plan with that
    codec only. The result reports what the written file holds, read back from it.
    """
    out = Path(out)
    image_set, num_images, image_size, fingerprint = _image_set(images, num_images, image_size, fingerprint)
    reader = open_source(src, layout, image_size=image_size, num_classes=num_classes, batch_size=batch_size,
                         order=order, order_from=Path(order_from) if order_from else None, num_images=num_images,
                         source_temperature=source_temperature, skip_bad=skip_bad, allow_pickle=allow_pickle)
    info = reader.info
    if image_set is not None:
        info.notes.append(f"image set: {image_set.what}")
    skipped = list(reader.skipped)
    epochs = list(info.epochs)
    if skip_bad:
        epochs = _check_batches(reader, epochs, skipped, progress, log)
    if not epochs:
        raise LabelStoreError(f"no usable epoch in {src}: {'; '.join(skipped[:3])}")

    sample = reader.sample_logits(sample_records, epochs)
    fingerprint = resolve_fingerprint(fingerprint)
    codec_obj, stored, plan = _choose_codec(reader, epochs, codec, budget, sample, fingerprint, log)
    keep = epochs[:stored]  # LPLD's label pool: the first epochs
    writer = _make_writer(reader, out, codec_obj, keep, fingerprint, overwrite)
    resumed = len(writer.written)
    if resumed:
        log(f"resuming {out}: {resumed} batches already written")
    path = _write_batches(reader, writer, keep, plan, progress, resumed)
    size = path.stat().st_size
    if plan is not None and size > plan.budget:
        path.unlink()
        raise LabelStoreError(f"the packed file came to {size:,} B, over the budget {plan.budget:,} B, and was removed; "
                              "pick a smaller configuration from `labelstore budget`")
    from .reader import LabelFile

    with LabelFile(path) as f:  # report what the file holds, not what was meant to be written
        records, partial = f.num_records, [e for e in range(f.num_epochs) if not f.is_complete(e)]
        notes = list(info.notes) + [f"stored epoch {e} is partial: {len(f.stored_batches(e))} of {f.num_batches(e)} batches"
                                    for e in partial]
    return PackResult(path, info.layout, records, len(keep), keep, codec_obj.get_config(), size,
                      skipped, notes, plan, resumed)


def _image_set(images, num_images, image_size, fingerprint):
    """The image set `--images` names (or None), and the count, sizes and fingerprint it settles."""
    if images is None:
        return None, num_images, image_size, fingerprint
    from .imageset import describe_image_set

    image_set = describe_image_set(images)
    if num_images is not None and int(num_images) != image_set.num_images:
        raise LabelStoreError(f"--num-images {num_images} but --images holds {image_set.num_images} ({image_set.what})")
    if image_size is None and image_set.image_sizes is not None:
        image_size = image_set.image_sizes
    if fingerprint is None and image_set.fingerprint:
        fingerprint = image_set.fingerprint
    return image_set, image_set.num_images, image_size, fingerprint


def _choose_codec(reader: SourceReader, epochs: list[int], codec, budget, sample: np.ndarray, fingerprint,
                  log: Callable[[str], None]):
    """(codec, stored epochs, budget plan or None): the budget planner's choice, else `codec` (fitted on the sample)."""
    info = reader.info
    if budget is None:
        codec = "dense16" if codec is None else codec
        codec_obj = parse_codec_spec(codec, info.num_classes) if isinstance(codec, str) else codec
        if codec_obj.needs_fit and not codec_obj.is_fitted:
            codec_obj.fit(sample)
        return codec_obj, len(epochs), None
    from .budget import plan_for_source

    codecs = None
    if codec is not None:
        spec = codec if isinstance(codec, str) else None
        if spec is None:
            raise LabelStoreError("with a budget, give the codec as a spec string (e.g. 'topk:k=10'), or leave it out")
        parse_codec_spec(spec, info.num_classes)  # a typo is an error, not another codec
        codecs = (spec,)
    plan = plan_for_source(reader, epochs, parse_size(budget), sample, fingerprint=fingerprint,
                           **({"codecs": codecs} if codecs else {}))
    chosen = plan.chosen
    log(f"budget {plan.budget:,} B: chose {chosen.codec_spec} with {chosen.stored_epochs}/{len(epochs)} epochs stored, "
        f"predicted {chosen.predicted_bytes:,} B, KL@T=20 {chosen.fidelity.kl_t20:.2e}, "
        f"KL@T=1 {chosen.fidelity.kl_t1:.2e}, top-1 agreement {100 * chosen.fidelity.top1:.2f}%")
    return chosen.codec, chosen.stored_epochs, plan


def _write_batches(reader: SourceReader, writer: LabelWriter, keep: list[int], plan, progress: bool,
                   resumed: int) -> Path:
    """Every batch of the kept epochs into `writer` (those a resumed journal holds skipped); the sealed file."""
    info = reader.info
    bar = _bar(sum(len(reader.stored_batches(e)) for e in keep), progress, initial=resumed)
    explicit_crops, explicit_mix = writer.header["crops"] == "explicit", writer.header["mix"] == "explicit"
    try:
        for k, e in enumerate(keep):
            writer.begin_epoch(k, info.batch_size, reader.order(e), batches=reader.stored_batches(e))
            done = {b for (ee, b) in writer.written if ee == k}
            for ib in reader.iter_epoch(e, skip=done):
                writer.write_batch(k, ib.batch, ib.logits, boxes=ib.boxes if explicit_crops else None,
                                   flips=ib.flips if explicit_crops else None, mix=ib.mix if explicit_mix else None)
                bar.update(1)
        if plan is not None and writer.data_nbytes > plan.budget:
            raise LabelStoreError(f"the labels take {writer.data_nbytes:,} B, over the budget {plan.budget:,} B (the sample "
                                  "under-predicted them); pick a smaller configuration from `labelstore budget`")
        return writer.finalize()
    except BaseException:
        writer.close()
        raise
    finally:
        bar.close()


def _make_writer(reader: SourceReader, out: Path, codec: LabelCodec, keep: list[int], fingerprint, overwrite) -> LabelWriter:
    info = reader.info
    full = info.layout == "arrays" and not getattr(reader, "has_crops", True)
    mix_kind = info.mix_kind
    attrs = dict(info.attrs)
    attrs["source_epochs"] = keep
    if overwrite and out.exists():
        out.unlink()
    return LabelWriter(
        out,
        num_classes=info.num_classes,
        num_images=info.num_images,
        codec=codec,
        image_fingerprint=fingerprint,
        image_sizes=info.image_sizes,
        crop_policy=CropPolicy(kind="full") if full else CropPolicy(),
        mix_policy=MixPolicy(kind=mix_kind, alpha=1.0 if mix_kind == "cutmix" else 0.8),
        crops="derived" if full else "explicit",
        orders="explicit",
        mix="explicit",
        source=info.source,
        source_temperature=info.source_temperature,
        teacher={"imported_from": info.layout},
        attrs=attrs,
    )


def _check_batches(reader, epochs, skipped, progress, log) -> list[int]:
    """--skip-bad: read every stored batch once before anything is written; bad batches are
    left out (reported), epochs with no good batch are dropped. The image count never changes."""
    good_epochs = []
    bar = _bar(len(epochs), progress, desc="checking epochs")
    for e in epochs:
        good, bad = reader.check_epoch(e)
        for msg in bad:
            skipped.append(msg)
            log(f"skipping: {msg}")
        if good:
            if reader.present is None:
                reader.present = {}
            reader.present[e] = good
            good_epochs.append(e)
        bar.update(1)
    bar.close()
    return good_epochs


def _bar(total: int, enabled: bool, initial: int = 0, desc: str = "packing batches"):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="batch", dynamic_ncols=True)
