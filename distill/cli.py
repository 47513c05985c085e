"""The `distill` command: squeeze | recover | relabel | train | evaluate | demo.

Each subcommand fills its stage's config dataclass from the command line, runs the stage and
prints where the outputs went; the resolved config is written beside every output.
"""

from __future__ import annotations

import argparse
import json
import sys

from labelstore.cli import run_command

__all__ = ["main", "build_parser"]


def _squeeze_args(p: argparse.ArgumentParser) -> None:
    from distill.squeeze import SqueezeConfig as C

    d = C()
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder (default %(default)s)")
    p.add_argument("--data", default=d.data, help="fashion-mnist | file.npz | image folder (default %(default)s)")
    p.add_argument("--models", nargs="+", default=d.models,
                   help="architectures to train: convnet resnet18 mobilenetv2 shufflenetv2 densenet121")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="SGD peak learning rate (warm-up, cosine)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random shift/flip")
    p.add_argument("--no-flip", dest="flip", action="store_false",
                   help="never mirror images (digits, text: a flip changes the class); recover and relabel follow")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="also RandomResizedCrop with this area range (teachers for relabel's crops)")
    p.add_argument("--image-size", type=int, default=None, help="resize image folders to this side")
    p.add_argument("--test-data", default=None,
                   help="a test set of its own (default: the data's test split; without one a held-out part)")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of each class held out as validation when the data has no test split (default %(default)s)")
    p.add_argument("--train-subset", type=int, default=None, help="train on a class-balanced subset")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="stop each model after this many steps")
    p.add_argument("--eval-every-epoch", action="store_true")
    _common(p)


def _recover_args(p: argparse.ArgumentParser) -> None:
    from distill.recover import RecoverConfig as C

    d = C()
    p.add_argument("--teachers", nargs="+", default=d.teachers,
                   help="checkpoints from `distill squeeze` and/or efficientnet-lite0/1/2 (default %(default)s)")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder (default %(default)s)")
    p.add_argument("--method", choices=("sre2l", "cvdd"), default=d.method)
    p.add_argument("--ipc", type=int, default=d.ipc, help="images per class (default %(default)s)")
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate on the image tensor")
    p.add_argument("--r-bn", type=float, default=d.r_bn, help="weight of the BN statistics loss")
    p.add_argument("--first-bn-mul", type=float, default=d.first_bn_mul, help="multiplier of the first BN layer")
    p.add_argument("--batch-size", type=int, default=None, help="images optimised together (default: classes)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"))
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random flips (default: as the teachers were trained)")
    p.add_argument("--jitter", type=int, default=None, help="random roll in px (default: size // 14)")
    p.add_argument("--committee-size", type=int, default=d.committee_size, help="CV-DD teachers per image index")
    p.add_argument("--temperature", type=float, default=d.temperature, help="CV-DD weight temperature")
    p.add_argument("--priors", type=float, nargs="+", default=None,
                   help="CV-DD prior accuracies in %% (default: the checkpoints' test or validation accuracy)")
    p.add_argument("--image-size", type=int, default=None, help="synthetic image side (default: first teacher's)")
    p.add_argument("--data", default=None,
                   help="the teachers' data set, recorded for relabel and train (default: the one their checkpoints "
                        "record; a spec is checked against them; 'none': no data set, e.g. pretrained teachers)")
    p.add_argument("--beton", action=argparse.BooleanOptionalAction, default=None,
                   help="write images.beton for --backend ffcv (default: only when the pixels outweigh FFCV's "
                        "16.8 MB page padding)")
    _common(p)


def _relabel_args(p: argparse.ArgumentParser) -> None:
    from distill.relabel import RelabelConfig as C

    d = C()
    p.add_argument("--images", default=d.images, help="images.npz from `distill recover` (default %(default)s)")
    p.add_argument("--teachers", nargs="+", default=d.teachers,
                   help="one checkpoint, or several for a weighted committee (default %(default)s)")
    p.add_argument("--out", default=d.out, help="label file to write (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs,
                   help="stored epochs; with --budget the most the planner may choose (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--codec", default=d.codec, help="codec spec without --budget: dense16, dense_q:bits=8, topk:k=5 ...")
    p.add_argument("--budget", default=None, help="bytes the label file may take, e.g. 300KB: picks epochs and codec")
    p.add_argument("--bn", choices=("eval", "batch"), default=d.bn,
                   help="teacher BatchNorm: eval (running stats) or batch (batch-specific stats, running stats untouched)")
    p.add_argument("--priors", type=float, nargs="+", default=None,
                   help="committee prior accuracies in %% (default: test_acc, else val_acc)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="committee weights softmax(prior / T)")
    p.add_argument("--crop-size", type=int, default=None, help="crop output side (default: the images' side)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range (default: 0.5 1 up to 64 px images, else 0.08 1)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flipped crops (default: as the teachers were trained)")
    p.add_argument("--mix", choices=("cutmix", "mixup", "none"), default=d.mix)
    p.add_argument("--backend", choices=("torch", "ffcv"), default=d.backend)
    p.add_argument("--drift-temperature", type=float, default=d.drift_temperature)
    p.add_argument("--force", action="store_true", help="overwrite an existing label file (and its journal)")
    _common(p)


def _train_args(p: argparse.ArgumentParser) -> None:
    from distill.train import TrainConfig as C

    d = C()
    p.add_argument("--images", default=d.images, help="images.npz (default %(default)s)")
    p.add_argument("--labels", default=None,
                   help="label file from `distill relabel` (default runs/relabel/labels.h5; none for an all-hard schedule)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the label file's; 100 for an all-hard schedule without one")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder (default %(default)s)")
    p.add_argument("--model", default=d.model, help="student architecture (default %(default)s)")
    p.add_argument("--schedule", default=d.schedule,
                   help="hald | soft | hard | soft:75,hard:150,soft:75 | <any>|drift | blend:w=0.7 ... (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--pool", default=d.pool, choices=("without_replacement", "replacement", "cycle"))
    p.add_argument("--temperature", type=float, default=d.temperature, help="KL temperature (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--hard-mix", choices=("cutmix", "mixup", "none"), default=d.hard_mix)
    p.add_argument("--backend", choices=("torch", "ffcv"), default=d.backend)
    p.add_argument("--test-data", default=None,
                   help="real test set (default: the data set recorded with the labels/images; 'none' skips testing)")
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="test every n epochs (0: only at the end)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--stop-after", type=int, default=None, help="end this run after n epochs (resume later)")
    _common(p)


def _demo_args(p: argparse.ArgumentParser) -> None:
    from distill.demo import DemoConfig as C

    d = C()
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder, reused on re-runs (default %(default)s)")
    p.add_argument("--budget", default=d.budget, help="label budget (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="relabel and student batch size (default %(default)s)")
    p.add_argument("--student-epochs", type=int, default=d.student_epochs)
    p.add_argument("--schedules", nargs="+", default=d.schedules)
    p.add_argument("--teacher-subset", type=int, default=d.teacher_subset, help="training images for the teacher")
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs)
    p.add_argument("--recover-iterations", type=int, default=d.recover_iterations)
    p.add_argument("--test-subset", type=int, default=None, help="test on a class-balanced subset (quick runs)")
    p.add_argument("--force", action="store_true", help="rebuild every stage, even those already built")
    _common(p)
    p.set_defaults(threads=2)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    from distill.evaluate import EvaluateConfig as C

    d = C(checkpoint="")
    p.add_argument("checkpoint", help="a checkpoint from `distill squeeze` / `distill train`, or efficientnet-lite0")
    p.add_argument("--data", default=None, help="default: the data set recorded in the checkpoint")
    p.add_argument("--split", default=None, choices=("train", "test", "validation"),
                   help="default: the recorded one (test, or the validation part squeeze held out)")
    p.add_argument("--subset", type=int, default=None, help="evaluate on a class-balanced subset")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _fields(cls, args: argparse.Namespace) -> dict:
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _run_squeeze(args: argparse.Namespace) -> int:
    from distill.squeeze import SqueezeConfig, squeeze

    if args.crop_scale is not None:
        args.crop_scale = tuple(args.crop_scale)
    paths = squeeze(SqueezeConfig(**_fields(SqueezeConfig, args)), progress=not args.quiet)
    import torch

    for p in paths:
        meta = torch.load(p, map_location="cpu", weights_only=True)
        key = "test_acc" if meta.get("test_acc") is not None else "val_acc"
        acc = meta.get(key)
        note = "" if key == "test_acc" else f" (validation: {meta['data']['holdout']['images']} held-out images)"
        print(f"{p}  {key} {acc:.4f}{note}" if acc is not None else str(p))
    print(f"metrics: {paths[0].parent / 'metrics.csv'}")
    return 0


def _run_recover(args: argparse.Namespace) -> int:
    from distill.recover import RecoverConfig, recover

    if args.crop_scale is not None:
        args.crop_scale = tuple(args.crop_scale)
    result = recover(RecoverConfig(**_fields(RecoverConfig, args)), progress=not args.quiet)
    print(f"{result['num_images']} images in {result['seconds']:.1f} s -> {result['images']}")
    print(f"preview: {result['preview']}  losses: {result['losses']}")
    print(f"beton: {result['beton']} ({result['beton_note']})" if result["beton"] else f"beton: {result['beton_note']}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from distill.evaluate import EvaluateConfig, evaluate

    result = evaluate(EvaluateConfig(**_fields(EvaluateConfig, args)), progress=not args.quiet)
    if args.json:
        print(json.dumps(result))
    else:
        split = {"all": "(all of it)", "validation": "validation part (held out of training)"}.get(
            result["split"], result["split"] + " split")
        print(f"{result['checkpoint']} ({result['model']}) on {result['data']} {split} "
              f"[{result['images']} images]: top-1 {result['accuracy']:.4f}")
    return 0


def _is_main() -> bool:
    from distill.distributed import is_main_process

    return is_main_process()


def _run_relabel(args: argparse.Namespace) -> int:
    from distill.relabel import RelabelConfig, relabel

    if args.crop_scale is not None:
        args.crop_scale = tuple(args.crop_scale)
    res = relabel(RelabelConfig(**_fields(RelabelConfig, args)), progress=not args.quiet)
    if not _is_main():  # under torchrun, rank 0 reports
        return 0
    print(f"labels: {res['labels']} ({res['bytes']:,} B, {res['stored_epochs']} epochs, {res['codec']}); "
          f"drift histogram: {res['drift_png']}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from distill.train import TrainConfig, train

    res = train(TrainConfig(**_fields(TrainConfig, args)), progress=not args.quiet)
    if not _is_main():  # under torchrun, rank 0 reports
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


def _run_demo(args: argparse.Namespace) -> int:
    from distill.demo import DemoConfig, demo

    demo(DemoConfig(**_fields(DemoConfig, args)), progress=not args.quiet)
    return 0


_COMMANDS = {
    "squeeze": ("train teachers on the real training set", _squeeze_args, _run_squeeze),
    "recover": ("synthesise images per class from teachers (SRe2L, CV-DD)", _recover_args, _run_recover),
    "relabel": ("label stored crops with a teacher or a weighted committee, through the loader", _relabel_args,
                _run_relabel),
    "train": ("train a student on distilled images and a label file with any schedule", _train_args, _run_train),
    "evaluate": ("top-1 accuracy of a checkpoint on a test set", _evaluate_args, _run_evaluate),
    "demo": ("the whole pipeline on Fashion-MNIST at 10 images per class, reusing what is built", _demo_args,
             _run_demo),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill", description="Reference dataset-distillation pipeline.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help, add_args, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        if add_args is not None:
            add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    args = build_parser().parse_args(argv)

    def _show(message, category, *_, **__) -> None:  # one line, like errors, not a source-code excerpt
        text = str(message).removeprefix(f"{args.command}: ")
        print(f"distill {args.command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = _show
        return run_command("distill", args.command, _COMMANDS[args.command][2], args)


if __name__ == "__main__":
    sys.exit(main())
