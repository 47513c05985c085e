"""``distill train``: a student on distilled images and a label file, with any schedule."""

from __future__ import annotations

from distill.cli.args import add_common, config_fields, is_main

HELP = "train a student on distilled images and a label file with any schedule"


def add_args(p) -> None:
    from distill.backends import BACKENDS
    from distill.recipes import RECIPES
    from distill.train import TrainConfig as C
    from loaders.pools import POOL_POLICIES

    d = C()
    p.add_argument("--images", default=d.images, help="images.npz")
    p.add_argument("--labels", default=None,
                   help="label file from `distill relabel` (default runs/relabel/labels.h5; none for an all-hard schedule)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the label file's; 100 for an all-hard schedule without one")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder")
    p.add_argument("--model", default=d.model, help="student architecture")
    p.add_argument("--schedule", default=d.schedule,
                   help="hald | soft | hard | soft:75,hard:150,soft:75 | <any>|drift | <any>|correct | blend:w=0.7 ...")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--recipe", default=d.recipe,
                   help=f"the student recipe the settings below default to: {', '.join(RECIPES)}; labelstore is this "
                        "project's, hald HALD's train_fkd.py (KL at T=20 without T^2, cosine per epoch over 2x the "
                        "epochs, hard steps with CutMix and label smoothing 0.8 in batches of 16); "
                        "'hald:kd_t_squared=true' changes one setting (docs/distill.md)")
    p.add_argument("--pool", default=None, choices=POOL_POLICIES,
                   help="how stored batches are reused (label pools: fewer stored epochs than soft ones); default the recipe's")
    p.add_argument("--kd-temperature", "--temperature", dest="temperature", type=float, default=None, metavar="T",
                   help="KD temperature: soft steps' KL at T (--temperature is its old name); default the recipe's "
                        "(labelstore 4, the papers' 20)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default the recipe's, 1e-3)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (default the recipe's, 0.01)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help="label smoothing of hard steps (default the recipe's: labelstore 0.1, hald 0.8)")
    p.add_argument("--hard-mix", choices=("cutmix", "mixup", "none"), default=None,
                   help="mixing in hard steps (default the recipe's, cutmix)")
    p.add_argument("--hard-batch-size", type=int, default=None,
                   help="batch size of all-hard epochs (default the recipe's: hald 16; labelstore the soft batch size)")
    p.add_argument("--backend", choices=BACKENDS, default=d.backend,
                   help="loader backend (ffcv needs images.beton)")
    p.add_argument("--test-data", default=None,
                   help="real test set (default: the data set recorded with the labels/images; 'none' skips testing)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test on a class-balanced subset of this many images (default: all of them)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="test every n epochs (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="write last.pt every n epochs (and at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--stop-after", type=int, default=None,
                   help="end this run after n epochs, resume later (default: run every epoch)")
    p.add_argument("--allow-pixel-mismatch", action="store_true",
                   help="replay other pixels than the teacher labelled (another backend or normalisation than the "
                        "label file records); refused otherwise")
    add_common(p)


def run(args) -> int:
    from distill.train import TrainConfig, train

    res = train(TrainConfig(**config_fields(TrainConfig, args)), progress=not args.quiet)
    if not is_main():  # under torchrun, rank 0 reports
        return 0
    if res["checkpoint"] is None:
        print(f"stopped after epoch {res['epochs_done']}: {res['last']} (run again with --resume)")
        return 0
    split = res["eval_split"]
    acc = res.get({"validation": "val_acc"}.get(split, "test_acc"))
    print(f"student: {res['checkpoint']}  schedule {res['schedule']}  "
          + (f"{split} top-1 {acc:.4f}  " if acc is not None else "") + f"label bytes {res['label_bytes']:,}  "
          + f"{res['seconds']:.1f} s  metrics: {res['metrics']}")
    return 0
