"""``distill relabel``: label stored crops with a teacher or a weighted committee, through the loader."""

from __future__ import annotations

import argparse

from distill.cli.args import add_common, config_fields, crop_scale, is_main

HELP = "label stored crops with a teacher or a weighted committee, through the loader"


def add_args(p) -> None:
    from distill.backends import BACKENDS
    from distill.relabel import RelabelConfig as C

    d = C()
    p.add_argument("--images", default=d.images, help="images.npz from `distill recover`")
    p.add_argument("--teachers", nargs="+", default=d.teachers,
                   help="one checkpoint, or several for a weighted committee")
    p.add_argument("--out", default=d.out, help="label file to write")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="stored epochs; with --budget the most the planner may choose")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per stored batch")
    p.add_argument("--codec", default=d.codec,
                   help="codec spec without --budget: dense16, dense_q:bits=8, topk:k=5 ...")
    p.add_argument("--budget", default=None,
                   help="bytes the label file may take, e.g. 300KB: picks epochs and codec (default: no budget, "
                        "--epochs with --codec)")
    p.add_argument("--bn", choices=("eval", "batch"), default=d.bn,
                   help="teacher BatchNorm: eval (running stats) or batch (batch-specific stats, running stats untouched)")
    p.add_argument("--priors", type=float, nargs="+", default=None,
                   help="committee prior accuracies in %% (default: test_acc, else val_acc)")
    p.add_argument("--committee-temperature", "--temperature", dest="temperature", type=float, default=d.temperature, metavar="T",
                   help="committee temperature T: weights softmax(prior / T) (--temperature is its old name)")
    p.add_argument("--crop-size", type=int, default=None, help="crop output side (default: the images' side)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range (default: 0.5 1 up to 64 px images, else 0.08 1)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flipped crops (default: as the teachers were trained)")
    p.add_argument("--mix", choices=("cutmix", "mixup", "none"), default=d.mix, help="mixing of the labelled crops")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="loader backend that draws the crops (ffcv needs images.beton)")
    p.add_argument("--drift-temperature", type=float, default=d.drift_temperature,
                   help="softmax temperature of the drift report")
    p.add_argument("--force", action="store_true", help="overwrite an existing label file (and its journal)")
    add_common(p)


def run(args) -> int:
    from distill.relabel import RelabelConfig, relabel

    crop_scale(args)
    res = relabel(RelabelConfig(**config_fields(RelabelConfig, args)), progress=not args.quiet)
    if not is_main():  # under torchrun, rank 0 reports
        return 0
    print(f"labels: {res['labels']} ({res['bytes']:,} B, {res['stored_epochs']} epochs, {res['codec']}); "
          f"drift histogram: {res['drift_png']}")
    return 0
