"""``labelstore budget``: the label-file configurations that fit a byte budget, with measured fidelity."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import LabelStoreError

HELP = "configurations (codec, stored epochs, crops) that fit a byte budget, with measured fidelity"


def add_args(p: argparse.ArgumentParser) -> None:
    from .args import image_size_arg

    p.add_argument("--images", type=int, required=True, help="images in the (distilled) set")
    p.add_argument("--classes", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True, help="training epochs the labels would cover")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--budget", required=True, help="bytes allowed, e.g. 285MB")
    p.add_argument("--sample", help="real teacher logits to measure fidelity on: .npy (n, C) or .npz with 'logits'")
    p.add_argument("--codecs", help="codec specs to consider, separated by commas or ';', e.g. dense16,topk:k=10,step=0.0625 "
                                    "(default: dense16, dense_q 8/6/4, topk 100..5, lowrank)")
    p.add_argument("--crops", choices=["explicit", "derived", "both"], default="both",
                   help="explicit: stored boxes and orders (imports); derived: re-drawn from the seed (zero bytes)")
    p.add_argument("--mix", choices=["cutmix", "mixup", "none"], default="cutmix")
    p.add_argument("--image-size", type=image_size_arg, default=(224, 224))
    p.add_argument("--tolerance", type=float, default=None, help="KL@T=20 difference (nats) counted as a tie (default 1e-3)")
    p.add_argument("--all", action="store_true", help="also list configurations over the budget")


def load_sample(path: str, num_classes: int) -> np.ndarray:
    p = Path(path)
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            with np.load(p, allow_pickle=False) as z:
                arr = z["logits"] if "logits" in z.files else z[z.files[0]]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise LabelStoreError(f"cannot read the sample {path} ({exc}); give an .npy (n, C) or .npz with 'logits'") from None
    arr = np.asarray(arr, np.float32).reshape(-1, arr.shape[-1])
    if arr.shape[1] != num_classes:
        raise LabelStoreError(f"the sample {path} has {arr.shape[1]} classes, --classes is {num_classes}")
    return arr[:20_000]


def split_codecs(text: str, num_classes: int) -> tuple[str, ...]:
    """``--codecs`` as a tuple of specs, each checked (an unknown id or parameter is refused,
    never dropped). Commas separate specs and a spec's parameters alike: a ``key=value`` piece
    belongs to the spec before it (``topk:k=10,step=0.0625,dense16`` is two specs)."""
    from ..codecs.registry import known_codecs, parse_codec_spec

    specs: list[str] = []
    for piece in (x.strip() for x in text.split(";" if ";" in text else ",")):
        if not piece:
            continue
        if specs and ":" in specs[-1] and ":" not in piece and "=" in piece:
            specs[-1] += "," + piece
        else:
            specs.append(piece)
    if not specs:
        raise LabelStoreError(f"--codecs {text!r} names no codec; give e.g. dense16,topk:k=10 (known codecs: {known_codecs()})")
    for spec in specs:
        try:
            parse_codec_spec(spec, num_classes)
        except LabelStoreError as exc:
            raise LabelStoreError(f"--codecs: {exc}") from None
    return tuple(specs)


def run(args) -> int:
    from .. import budget as B
    from ..pack import parse_size

    for name in ("images", "classes", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise LabelStoreError(f"--{name.replace('_', '-')} must be positive")
    # checked before any work, so a typo fails at once
    codecs = split_codecs(args.codecs, args.classes) if args.codecs is not None else B.DEFAULT_CODECS
    synthetic = args.sample is None
    sample = B.synthetic_sample(args.classes) if synthetic else load_sample(args.sample, args.classes)
    crop_bpr, mix_pb = B.drawn_costs(args.images, args.batch_size, args.image_size, args.mix)
    modes = {"explicit": crop_bpr, "derived": 0.0}
    if args.crops != "both":
        modes = {args.crops: modes[args.crops]}
    plan = B.plan(num_images=args.images, num_classes=args.classes, epochs=args.epochs, batch_size=args.batch_size,
                  budget=parse_size(args.budget), sample=sample, crop_bpr=modes, mix_per_batch=mix_pb, codecs=codecs,
                  tolerance=B.DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance,
                  synthetic_sample=synthetic, mix_kind=args.mix)
    print(f"budget {plan.budget:,} B for {args.images:,} images x {args.epochs} epochs, {args.classes} classes, batch {args.batch_size}")
    print(f"fidelity measured on {'SYNTHETIC logits (pass --sample for real numbers)' if synthetic else f'{len(sample):,} records of {args.sample}'}")
    print(plan.table(all_rows=args.all))
    try:
        c = plan.chosen
        print(f"(*) = what `pack --budget` chooses: {c.codec_spec}, {c.stored_epochs} of {args.epochs} epochs stored, "
              f"{c.crops} crops, {c.predicted_bytes:,} B (rule: highest fidelity that fits; ties within the tolerance go to more stored epochs)")
    except LabelStoreError as exc:
        print(f"nothing fits: {exc}")
        return 1
    return 0
