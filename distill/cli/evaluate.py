"""``distill evaluate``: top-1 accuracy of a checkpoint on a test set."""

from __future__ import annotations

import json

from distill.cli.args import config_fields

HELP = "top-1 accuracy of a checkpoint on a test set"


def add_args(p) -> None:
    from distill.evaluate import EvaluateConfig as C

    d = C(checkpoint="")
    p.add_argument("checkpoint", help="a checkpoint from `distill squeeze` / `distill train`, or efficientnet-lite0")
    p.add_argument("--data", default=None, help="default: the data set recorded in the checkpoint")
    p.add_argument("--split", default=None, choices=("train", "test", "validation"),
                   help="default: the recorded one (test, or the validation part squeeze held out)")
    p.add_argument("--subset", type=int, default=None,
                   help="evaluate on a class-balanced subset of this many images (default: all of them)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default=d.device, help="torch device")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the subset draw")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from distill.evaluate import EvaluateConfig, evaluate

    result = evaluate(EvaluateConfig(**config_fields(EvaluateConfig, args)), progress=not args.quiet)
    if args.json:
        print(json.dumps(result))
    else:
        split = {"all": "(all of it)", "validation": "validation part (held out of training)"}.get(
            result["split"], result["split"] + " split")
        print(f"{result['checkpoint']} ({result['model']}) on {result['data']} {split} "
              f"[{result['images']} images]: top-1 {result['accuracy']:.4f}")
    return 0
