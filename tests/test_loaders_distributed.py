"""Sharding by rank: two real gloo processes on CPU relabel (sharded, merged on rank 0) and replay;
the union of their samples is the epoch."""
from __future__ import annotations

import json
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp

from labelstore import CropPolicy, LabelFile, LabelWriter, MixPolicy, image_set_fingerprint, merge_shards
from loaders import ReplayLoader, TorchBackend, record_labels
from loaders.distributed import shard_batches

N, BS, C = 45, 8, 5  # 6 batches per epoch, the last one short


def _images(n):
    return np.random.default_rng(0).integers(0, 256, (n, 20, 20, 3), dtype=np.uint8)


def _write(path, n):
    images = _images(n)
    g = np.random.default_rng(1)
    with LabelWriter(path, num_classes=C, num_images=n, seed=2, image_fingerprint=image_set_fingerprint(images),
                     image_sizes=(20, 20), crop_policy=CropPolicy(size=(12, 12)), mix_policy=MixPolicy("cutmix")) as w:
        for e in range(2):
            w.begin_epoch(e, BS)
            for b in range(w.num_batches(e)):
                w.write_batch(e, b, g.normal(size=(len(w.batch_indices(e, b)), C)).astype(np.float32))


def _teacher(x):
    w = torch.randn(3 * 16, C, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ w


def _writer(path, n, images, shard=None):
    return LabelWriter(path, num_classes=C, num_images=n, seed=2, image_fingerprint=image_set_fingerprint(images),
                       image_sizes=(20, 20), crop_policy=CropPolicy(size=(12, 12)), mix_policy=MixPolicy("cutmix"),
                       shard=shard)


def _worker(rank, world, port, path, n, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        images = _images(n)
        backend = TorchBackend(images, np.arange(n) % C)
        # relabel sharded by rank: every rank runs the teacher on its share, rank 0 writes
        writer = _writer(path, n, images) if rank == 0 else None
        summary = record_labels(writer, backend, _teacher, epochs=2, batch_size=BS, mean=0.5, std=0.25,
                                segment=2, progress=False)
        if rank == 0:
            writer.finalize()
        # the other way: every rank writes a shard of its own batches, rank 0 merges them
        shard = _writer(path + ".sharded.h5", n, images, shard=(rank, world))
        record_labels(shard, backend, _teacher, epochs=2, batch_size=BS, mean=0.5, std=0.25, segment=2, progress=False)
        shard.finalize()
        dist.barrier()
        if rank == 0:
            merge_shards(path + ".sharded.h5")
        loader = ReplayLoader(path, backend, "soft:1,hard:1", epochs=2, mean=0.5, std=0.25, seed=4)  # rank from dist
        per_epoch = []
        for epoch in range(2):
            steps = list(loader)
            ids = [int(i) for s in steps for i in s.indices]
            assert all(s.images.shape[0] == len(s.indices) == s.targets.shape[0] for s in steps)
            per_epoch.append({"ids": ids, "steps": len(steps), "len": len(steps)})
            # a real collective per step: every rank must have the same number of steps
            for s in steps:
                t = torch.tensor([float(len(s))])
                dist.all_reduce(t)
        gathered = [None] * world
        dist.all_gather_object(gathered, per_epoch)
        if rank == 0:
            with open(out, "w") as fh:
                json.dump({"ranks": gathered, "summary": summary}, fh)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_cover_each_epoch_exactly_once(tmp_path, world=2, n=50):
    # 50 images in batches of 8: 7 batches, so 6 go whole to alternating ranks and the 7th is split
    path, out = tmp_path / "l.h5", tmp_path / "out.json"
    tmp.spawn(_worker, args=(world, _free_port(), str(path), n, str(out)), nprocs=world, join=True)
    result = json.loads(out.read_text())
    assert result["summary"]["batches_written"] == 14 and result["summary"]["records"] == 100
    # the merged file holds exactly what a one-process relabel writes
    images = _images(n)
    with _writer(tmp_path / "one.h5", n, images) as w:
        record_labels(w, TorchBackend(images), _teacher, epochs=2, batch_size=BS, mean=0.5, std=0.25, progress=False)
    for merged in (path, tmp_path / "l.h5.sharded.h5"):
        with LabelFile(merged) as a, LabelFile(tmp_path / "one.h5") as b:
            assert len(a) == len(b) == 14
            for x, y in zip(a.batches(), b.batches()):
                np.testing.assert_array_equal(x.logits, y.logits)
                np.testing.assert_array_equal(x.indices, y.indices)
                assert x.mix == y.mix
    ranks = result["ranks"]
    assert len(ranks) == world
    for epoch in range(2):  # epoch 0 soft (stored batches), epoch 1 hard (fresh crops)
        ids = [i for r in ranks for i in r[epoch]["ids"]]
        assert sorted(ids) == list(range(n))  # the whole epoch, no duplicates
        assert len({r[epoch]["steps"] for r in ranks}) == 1  # the same number of steps on every rank


def test_shard_rule():
    # 7 batches on 3 ranks: 6 whole (b % 3), the 7th split in 3 parts
    sizes = [8] * 6 + [5]
    shards = [shard_batches(sizes, r, 3) for r in range(3)]
    assert [[b for b, p in s if p is None] for s in shards] == [[0, 3], [1, 4], [2, 5]]
    parts = [p for s in shards for b, p in s if p is not None]
    assert [(p.start, p.stop) for p in parts] == [(0, 2), (2, 3), (3, 5)]
    assert shard_batches([8, 8], 0, 1) == [(0, None), (1, None)]


def test_split_tail_batch_keeps_its_stored_mix(tmp_path):
    # world 4 with 6 batches: two tail batches are split; each part must be the slice of the whole mixed batch
    _write(tmp_path / "l.h5", N)
    backend = TorchBackend(_images(N), np.arange(N) % C)
    whole = {s.batch: s for s in ReplayLoader(tmp_path / "l.h5", backend, epochs=1, mean=0.5, std=0.25)}
    seen = []
    for rank in range(4):
        for s in ReplayLoader(tmp_path / "l.h5", backend, epochs=1, mean=0.5, std=0.25, rank=rank, world_size=4):
            w = whole[s.batch]
            pos = [list(w.indices).index(i) for i in s.indices]
            assert torch.equal(s.images, w.images[pos]) and torch.equal(s.targets, w.targets[pos])
            seen += list(s.indices)
    assert sorted(seen) == list(range(N))
