"""``distill recover``: synthesise images per class from teachers (SRe2L, CV-DD)."""

from __future__ import annotations

import argparse

from distill.cli.args import add_common, config_fields, crop_scale

HELP = "synthesise images per class from teachers (SRe2L, CV-DD)"


def add_args(p) -> None:
    from distill.recover import RecoverConfig as C

    d = C()
    p.add_argument("--teachers", nargs="+", default=d.teachers,
                   help="checkpoints from `distill squeeze` and/or efficientnet-lite0/1/2")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder")
    p.add_argument("--method", choices=("sre2l", "cvdd"), default=d.method,
                   help="sre2l: the first teacher; cvdd: a committee per image index")
    p.add_argument("--ipc", type=int, default=d.ipc, help="images per class")
    p.add_argument("--classes", type=class_ids, default=None, metavar="IDS",
                   help="recover only these class ids: '0-99', '0,10,20' or '0-999:10' (every 10th); default all")
    p.add_argument("--iterations", type=int, default=d.iterations, help="optimisation steps per batch of images")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate on the image tensor")
    p.add_argument("--r-bn", type=float, default=d.r_bn, help="weight of the BN statistics loss")
    p.add_argument("--first-bn-mul", type=float, default=d.first_bn_mul, help="multiplier of the first BN layer")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images optimised together (default: all when ipc x classes <= 256 for sre2l, else one per class)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range (default: 0.5 1 up to 64 px images, else 0.08 1)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random flips (default: as the teachers were trained)")
    p.add_argument("--jitter", type=int, default=None, help="random roll in px (default: size // 14)")
    p.add_argument("--committee-size", type=int, default=d.committee_size, help="CV-DD teachers per image index")
    p.add_argument("--committee-temperature", "--temperature", dest="temperature", type=float, default=d.temperature, metavar="T",
                   help="CV-DD committee temperature T: weights softmax(prior / T) (--temperature is its old name)")
    p.add_argument("--priors", type=float, nargs="+", default=None,
                   help="CV-DD prior accuracies in %% (default: the checkpoints' test or validation accuracy)")
    p.add_argument("--image-size", type=int, default=None, help="synthetic image side (default: first teacher's)")
    p.add_argument("--data", default=None,
                   help="the teachers' data set, recorded for relabel and train (default: the one their checkpoints "
                        "record; a spec is checked against them; 'none': no data set, e.g. pretrained teachers)")
    p.add_argument("--beton", action=argparse.BooleanOptionalAction, default=None,
                   help="write images.beton for --backend ffcv (default: only when the pixels outweigh FFCV's "
                        "16.8 MB page padding)")
    add_common(p)


def class_ids(text: str) -> list[int]:
    """'0-99', '3,7,12' or 'start-stop:step' (stop included) as a list of class ids."""
    out = []
    try:
        for part in text.split(","):
            span, _, step = part.partition(":")
            lo, dash, hi = span.partition("-")
            out += list(range(int(lo), int(hi) + 1, int(step or 1))) if dash else [int(lo)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read class ids {text!r}: write e.g. 0-99, 0,10,20 or 0-999:10") from None
    return out


def run(args) -> int:
    from distill.recover import RecoverConfig, recover

    crop_scale(args)
    result = recover(RecoverConfig(**config_fields(RecoverConfig, args)), progress=not args.quiet)
    print(f"{result['num_images']} images in {result['seconds']:.1f} s -> {result['images']}")
    print(f"preview: {result['preview']}  losses: {result['losses']}")
    print(f"beton: {result['beton']} ({result['beton_note']})" if result["beton"] else f"beton: {result['beton_note']}")
    return 0
