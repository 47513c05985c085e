"""``labelstore inspect FILE``: what a label file holds and where its bytes go."""
from __future__ import annotations

import argparse
import json

from ..errors import describe_ranges
from .args import human_bytes

HELP = "what a label file holds and where its bytes go"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("--drift", metavar="LABELS.npy", help="also report HALD's local semantic drift against these image classes")


def run(args) -> int:
    from ..reader import LabelFile

    with LabelFile(args.file) as f:
        sizes = f.byte_breakdown
        total = sum(sizes.values())
        info = {
            "file": str(f.path),
            "format_version": f.format_version,
            "classes": f.num_classes,
            "images": f.num_images,
            "epochs": f.num_epochs,
            "partial_epochs": {str(e): {"stored_batches": describe_ranges(f.stored_batches(e)), "of": f.num_batches(e)}
                               for e in range(f.num_epochs) if not f.is_complete(e)},
            "batch_sizes": sorted({f.batch_size(e) for e in range(f.num_epochs)}),
            "records": f.num_records,
            "seed": f.seed,
            "codec": f.codec.get_config(),
            "crops": f.crops_mode,
            "orders": f.orders_mode,
            "mix": f.mix_mode,
            "crop_policy": f.crop_policy.to_dict(),
            "mix_policy": f.mix_policy.to_dict(),
            "order_source": f.user_attrs.get("order_source", "derived from the seed" if f.orders_mode == "derived" else None),
            "pixels": f.pixels,
            "user_attrs": f.user_attrs,
            "source": f.source if f.source == "logits" else f"probabilities at T={f.source_temperature:g}",
            "image_fingerprint": f.image_fingerprint,
            "teacher": f.teacher,
            "bytes": {"total": total, **sizes},
            "bytes_per_record": total / max(f.num_records, 1),
        }
    if args.json:
        print(json.dumps(info, indent=1))
        return _inspect_drift(args)
    codec = info["codec"]
    params = ", ".join(f"{k}={v}" for k, v in codec.items() if k not in ("id", "num_classes"))
    print(f"file       {info['file']}  (format v{info['format_version']})")
    print(f"classes    {info['classes']}")
    print(f"images     {info['images']}  fingerprint {info['image_fingerprint'] or '(none)'}")
    print(f"epochs     {info['epochs']}  batch size {', '.join(map(str, info['batch_sizes']))}")
    for e, p in info["partial_epochs"].items():
        print(f"  epoch {e} is partial: batches {p['stored_batches']} of 0..{p['of'] - 1} stored")
    print(f"records    {info['records']}  seed {info['seed']}")
    print(f"codec      {codec['id']}{f' ({params})' if params else ''}; labels are {info['source']}")
    print(f"crops      {info['crops']}; orders {info['orders']}; mix {info['mix']}")
    print(f"crop       {json.dumps(info['crop_policy'], sort_keys=True)}")
    print(f"mixing     {json.dumps(info['mix_policy'], sort_keys=True)}")
    if info["order_source"]:
        print(f"order      {info['order_source']}")
    if info["pixels"]:
        print(f"pixels     {json.dumps(info['pixels'], sort_keys=True)}")
    attrs = {k: v for k, v in info["user_attrs"].items() if k != "order_source"}
    if attrs:
        print(f"attrs      {json.dumps(attrs, sort_keys=True)[:300]}")
    if info["teacher"]:
        print(f"teacher    {json.dumps(info['teacher'])}")
    print(f"bytes      {human_bytes(total)} in all, {info['bytes_per_record']:.2f} per record")
    for k in ("labels", "crops", "mix", "orders", "metadata"):
        print(f"  {k:<9}{human_bytes(sizes[k]):>12}  {100 * sizes[k] / max(total, 1):5.1f}%  {sizes[k] / max(f.num_records, 1):9.2f} B/record")
    return _inspect_drift(args)


def _inspect_drift(args) -> int:
    if not args.drift:
        return 0
    from .drift import run as drift

    return drift(argparse.Namespace(file=args.file, classes=args.drift, temperature=1.0, plot=None, json=args.json))
