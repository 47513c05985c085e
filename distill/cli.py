"""The `distill` command: squeeze | recover | relabel | train | evaluate | demo.

Each subcommand fills its stage's config dataclass from the command line, runs the stage and
prints where the outputs went; the resolved config is written beside every output.

Only the verb being run is imported (its stage module and torch): ``distill --help`` and
``distill --version`` import neither. Every option's help shows its default. A stage whose
optional dependencies are missing ends with one line naming the install command.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main", "build_parser"]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after every option whose help does not already say its default;
    lists as space-separated words (as typed); flags (store_true/false) and None defaults,
    whose meaning the help text spells out, get nothing appended."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("default" in text.lower() or not action.option_strings or d is None or d is argparse.SUPPRESS
                or isinstance(d, bool)):
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else str(d)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def _squeeze_args(p: argparse.ArgumentParser) -> None:
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
    _common(p)


def _recover_args(p: argparse.ArgumentParser) -> None:
    from distill.recover import RecoverConfig as C

    d = C()
    p.add_argument("--teachers", nargs="+", default=d.teachers,
                   help="checkpoints from `distill squeeze` and/or efficientnet-lite0/1/2")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder")
    p.add_argument("--method", choices=("sre2l", "cvdd"), default=d.method,
                   help="sre2l: the first teacher; cvdd: a committee per image index")
    p.add_argument("--ipc", type=int, default=d.ipc, help="images per class")
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
    p.add_argument("--temperature", type=float, default=d.temperature, help="committee weights softmax(prior / T)")
    p.add_argument("--crop-size", type=int, default=None, help="crop output side (default: the images' side)")
    p.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="RandomResizedCrop area range (default: 0.5 1 up to 64 px images, else 0.08 1)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="flipped crops (default: as the teachers were trained)")
    p.add_argument("--mix", choices=("cutmix", "mixup", "none"), default=d.mix, help="mixing of the labelled crops")
    p.add_argument("--backend", choices=("torch", "ffcv"), default=d.backend,
                   help="loader backend that draws the crops (ffcv needs images.beton)")
    p.add_argument("--drift-temperature", type=float, default=d.drift_temperature,
                   help="softmax temperature of the drift report")
    p.add_argument("--force", action="store_true", help="overwrite an existing label file (and its journal)")
    _common(p)


def _train_args(p: argparse.ArgumentParser) -> None:
    from distill.train import TrainConfig as C

    d = C()
    p.add_argument("--images", default=d.images, help="images.npz")
    p.add_argument("--labels", default=None,
                   help="label file from `distill relabel` (default runs/relabel/labels.h5; none for an all-hard schedule)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the label file's; 100 for an all-hard schedule without one")
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder")
    p.add_argument("--model", default=d.model, help="student architecture")
    p.add_argument("--schedule", default=d.schedule,
                   help="hald | soft | hard | soft:75,hard:150,soft:75 | <any>|drift | blend:w=0.7 ...")
    p.add_argument("--epochs", type=int, default=d.epochs, help="training epochs")
    p.add_argument("--pool", default=d.pool, choices=("without_replacement", "replacement", "cycle"),
                   help="how stored batches are reused (label pools: fewer stored epochs than soft ones)")
    p.add_argument("--temperature", type=float, default=d.temperature, help="KL temperature")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="weight decay")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help="label smoothing of hard steps")
    p.add_argument("--hard-mix", choices=("cutmix", "mixup", "none"), default=d.hard_mix, help="mixing in hard steps")
    p.add_argument("--backend", choices=("torch", "ffcv"), default=d.backend,
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
    _common(p)


def _demo_args(p: argparse.ArgumentParser) -> None:
    from distill.demo import DemoConfig as C

    d = C()
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder, reused on re-runs")
    p.add_argument("--budget", default=d.budget, help="label budget")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="relabel and student batch size")
    p.add_argument("--student-epochs", type=int, default=d.student_epochs, help="training epochs of each student")
    p.add_argument("--schedules", nargs="+", default=d.schedules, help="one student per schedule")
    p.add_argument("--teacher-subset", type=int, default=d.teacher_subset, help="training images for the teacher")
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs, help="training epochs of the teacher")
    p.add_argument("--recover-iterations", type=int, default=d.recover_iterations, help="recover's optimisation steps")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test on a class-balanced subset (quick runs; default: the whole test set)")
    p.add_argument("--force", action="store_true", help="rebuild every stage, even those already built")
    _common(p, threads=d.threads)


def _evaluate_args(p: argparse.ArgumentParser) -> None:
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


def _common(p: argparse.ArgumentParser, threads: int | None = None) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--threads", type=int, default=threads,
                   help="torch CPU threads" + (" (default: torch's own choice)" if threads is None else ""))
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


class _Version(argparse.Action):
    """``--version``, imported only when asked (labelstore's import is not free)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version of labelstore-kit and exit"):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from labelstore import __version__

        print(f"distill (labelstore-kit) {__version__}")
        parser.exit()


def _verb(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the top level takes no option with a value)."""
    for tok in argv:
        if not tok.startswith("-"):
            return tok if tok in _COMMANDS else None
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``distill`` parser. With ``argv``, only the verb it names gets its options (and its
    stage module imported): the top-level help then costs no torch import."""
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Reference dataset-distillation pipeline: squeeze -> recover -> relabel -> train, evaluate, demo.",
        epilog="`distill <command> --help` lists a command's options with their defaults.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    only = _verb(argv) if argv is not None else None
    for name, (help, add_args, _) in _COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help, formatter_class=_HelpFormatter)
        if add_args is not None and (argv is None or name == only):
            add_args(p)
    return parser


def _missing(command: str, exc: BaseException):
    """The one-line MissingExtra for an optional dependency ``command`` lacks, else None.

    torch, torchvision, Pillow and matplotlib are what every stage needs: the ``distill`` extra."""
    from labelstore._extras import EXTRA_OF, missing_extra

    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = "distill" if EXTRA_OF.get(name) in ("loaders", "plot") else None
    return missing_extra(exc, "this command", extra)


def _guarded(command: str, run):
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except ModuleNotFoundError as exc:
            err = _missing(command, exc)
            if err is None:
                raise
            raise err from None

    return wrapper


def main(argv: list[str] | None = None) -> int:
    import warnings

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser(argv)
    except ModuleNotFoundError as exc:  # the verb's stage module needs an extra that is not installed
        err = _missing(_verb(argv) or "", exc)
        if err is None:
            raise
        print(f"distill {_verb(argv)}: error: {err}", file=sys.stderr)
        return int(err.exit_code)
    args = parser.parse_args(argv)

    from labelstore.cli import run_command

    def _show(message, category, *_, **__) -> None:  # one line, like errors, not a source-code excerpt
        text = str(message).removeprefix(f"{args.command}: ")
        print(f"distill {args.command}: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = _show
        return run_command("distill", args.command, _guarded(args.command, _COMMANDS[args.command][2]), args)


if __name__ == "__main__":
    sys.exit(main())
