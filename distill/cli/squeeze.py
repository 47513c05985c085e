"""``distill squeeze``: train teachers on the real training set."""

from __future__ import annotations

from distill.cli.args import add_common, config_fields, crop_scale

HELP = "train teachers on the real training set"


def add_args(p) -> None:
    from distill.squeeze import SqueezeConfig as C

    d = C()
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder")
    p.add_argument("--data", default=d.data, help="fashion-mnist | file.npz | image folder")
    p.add_argument("--models", nargs="+", default=d.models,
                   help="architectures to train: convnet resnet18 mobilenetv2 shufflenetv2 densenet121")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs per model")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per SGD step")
    p.add_argument("--lr", type=float, default=d.lr, help="SGD peak learning rate (warm-up, cosine)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="SGD weight decay")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of the loss")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random shift/flip (default: shift by up to 2 px, and flip unless --no-flip)")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="never mirror images (digits, text: a flip changes the class); recover and relabel follow")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="also RandomResizedCrop with this area range (teachers for relabel's crops; "
                        "default: no resized crops)")
    p.add_argument("--image-size", type=int, default=None,
                   help="resize image folders to this side (default: the data's own size)")
    p.add_argument("--test-data", default=None,
                   help="a test set of its own (default: the data's test split; without one a held-out part)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of each class held out as validation when the data has no test split")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on a class-balanced subset of this many images (default: all of them)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test on a class-balanced subset of this many images (default: all of them)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each model after this many steps (default: no limit)")
    p.add_argument("--eval-every-epoch", action="store_true", help="test after every epoch, not only the last")
    add_common(p)


def run(args) -> int:
    import torch

    from distill.squeeze import SqueezeConfig, squeeze

    crop_scale(args)
    paths = squeeze(SqueezeConfig(**config_fields(SqueezeConfig, args)), progress=not args.quiet)
    for p in paths:
        meta = torch.load(p, map_location="cpu", weights_only=True)
        key = "test_acc" if meta.get("test_acc") is not None else "val_acc"
        acc = meta.get(key)
        note = "" if key == "test_acc" else f" (validation: {meta['data']['holdout']['images']} held-out images)"
        print(f"{p}  {key} {acc:.4f}{note}" if acc is not None else str(p))
    print(f"metrics: {paths[0].parent / 'metrics.csv'}")
    return 0
