"""``labelstore merge FILE``: join the shards of a distributed relabel run into FILE."""
from __future__ import annotations

HELP = "join the per-rank shards of a distributed relabel run into one label file"


def add_args(p) -> None:
    p.add_argument("file", help="the label file to build; its shards are in FILE.shards/")
    p.add_argument("--keep-shards", action="store_true", help="keep the shard journals after merging")


def run(args) -> int:
    from ..merge import merge_shards

    path = merge_shards(args.file, keep_shards=args.keep_shards)
    print(f"merged shards into {path}")
    return 0
