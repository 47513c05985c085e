"""``distill demo``: the whole pipeline on Fashion-MNIST at 10 images per class."""

from __future__ import annotations

from distill.cli.args import add_common, config_fields

HELP = ("the whole pipeline on Fashion-MNIST at 10 images per class: label bytes against SRe2L's layout, and HALD "
        "against all-soft at few and at many stored epochs, reusing what is built")


def add_args(p) -> None:
    from distill.demo import DemoConfig as C

    d = C()
    p.add_argument("--out", dest="out_dir", default=d.out_dir, help="output folder, reused on re-runs")
    p.add_argument("--budget", default=d.budget, help="label budget")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="relabel and student batch size")
    p.add_argument("--student-epochs", type=int, default=d.student_epochs, help="training epochs of each student")
    p.add_argument("--images", choices=("real", "sre2l"), default=d.images,
                   help="10 real training images per class, or SRe2L-recovered ones")
    p.add_argument("--few", type=int, default=d.few, help="stored epochs of the 'few' label file")
    p.add_argument("--schedules", nargs="+", default=d.schedules,
                   help="one student per schedule at few and at many stored epochs (all-soft also on the budgeted file)")
    p.add_argument("--teacher-subset", type=int, default=d.teacher_subset, help="training images for the teacher")
    p.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs, help="training epochs of the teacher")
    p.add_argument("--recover-iterations", type=int, default=d.recover_iterations, help="recover's optimisation steps (--images sre2l)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test on a class-balanced subset (quick runs; default: the whole test set)")
    p.add_argument("--force", action="store_true", help="rebuild every stage, even those already built")
    add_common(p, threads=d.threads)


def run(args) -> int:
    from distill.demo import DemoConfig, demo

    demo(DemoConfig(**config_fields(DemoConfig, args)), progress=not args.quiet)
    return 0
