"""Merge the shards that ranks of a distributed relabel run wrote into one label file.

Each rank writes a journal of its own batches (``LabelWriter(..., shard=(rank, world))``,
batches ``b`` with ``b % world == rank``). Because every crop, order and mix is keyed by
(seed, epoch, index), the merged file equals what a single process with the same seed writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from ._build import build_file
from ._journal import Journal
from .codecs import get_codec
from .errors import LabelStoreError
from ._journal import shard_dirs


def merge_shards(path: str | Path, *, keep_shards: bool = False) -> Path:
    """Build ``path`` from ``<path>.shards/rank<r>of<w>/``; every shard must be complete."""
    path = Path(path)
    root = path.with_name(path.name + ".shards")
    found = shard_dirs(path)
    dirs = [d for d, _, _ in found]
    if not dirs:
        raise LabelStoreError(f"no shards to merge under {root}; run the relabelling with shard=(rank, world) first")
    worlds = {w for _, _, w in found}
    if len(worlds) != 1:
        raise LabelStoreError(f"{root} mixes shards of runs with different world sizes {sorted(worlds)}; delete the stale ones")
    world = worlds.pop()
    ranks = sorted(r for _, r, _ in found)
    if ranks != list(range(world)):
        raise LabelStoreError(f"{root}: shards of ranks {sorted(set(range(world)) - set(ranks))} are missing")

    header = arrays = None
    epochs: dict = {}
    present: dict = {}
    entries: dict = {}
    owner: dict = {}
    for d in dirs:
        j = Journal(d)
        if not j.is_done():
            raise LabelStoreError(f"shard {d.name} is not finished; resume that rank, then merge again")
        h, a = j.read_header()
        if header is None:
            header, arrays = h, a
        elif h != header or a.keys() != arrays.keys() or any(not np.array_equal(a[k], arrays[k]) for k in a):
            raise LabelStoreError(f"shard {d.name} was written with other settings than the others; they cannot be merged")
        ep, ents, pres = j.scan()
        for e, (bs, order) in ep.items():
            if e in epochs and (epochs[e][0] != bs or not _same(epochs[e][1], order) or not _same(present.get(e), pres.get(e))):
                raise LabelStoreError(f"shard {d.name} disagrees with the others on epoch {e}'s batch size, order or batches")
            epochs.setdefault(e, (bs, order))
            if e in pres:
                present.setdefault(e, pres[e])
        for en in ents:
            key = (en.epoch, en.batch)
            if key in entries:
                raise LabelStoreError(f"epoch {key[0]} batch {key[1]} is in two shards; delete the stale shard")
            entries[key] = en
            owner[key] = j

    n = header["num_images"]
    missing = [(e, int(b)) for e, (bs, _) in epochs.items() for b in present.get(e, range(-(-n // bs)))
               if (e, int(b)) not in entries]
    if missing or sorted(epochs) != list(range(len(epochs))):
        raise LabelStoreError(f"the shards do not cover every batch (missing e.g. {missing[:3]}); resume the ranks")
    codec_arrays = {k[len("codec."):]: v for k, v in arrays.items() if k.startswith("codec.")}
    codec = get_codec(header["codec"], codec_arrays or None)
    sizes = arrays.get("image_sizes")
    build_file(path, header, codec, sizes, epochs, entries, lambda en: owner[(en.epoch, en.batch)].read_chunk(en), root)
    if not keep_shards:
        shutil.rmtree(root, ignore_errors=True)
    return path


def _same(a, b) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))
