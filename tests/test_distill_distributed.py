"""`distill relabel` and `distill train` under two real gloo processes, started the way torchrun
starts them (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT in the environment):
the merged label file equals a one-process relabel with the same seed, and DDP training ends
with the same weights on both ranks."""
from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as tmp

from distill.data import ImageDataset, fashion_mnist, save_npz
from distill.distributed import DistContext, distributed, run_collectively
from distill.models import build_model, save_checkpoint
from distill.relabel import RelabelConfig, relabel
from distill.train import TrainConfig, train
from labelstore import LabelFile
from labelstore.errors import LabelStoreError

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_env(rank: int, world: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def _relabel_cfg(d: Path, out: str, **kw) -> RelabelConfig:
    return RelabelConfig(images=str(d / "images.npz"), teachers=[str(d / "teacher.pt")], out=str(d / out),
                         epochs=2, batch_size=8, threads=1, **kw)


def _train_cfg(d: Path, labels: str, out: str) -> TrainConfig:
    return TrainConfig(images=str(d / "images.npz"), labels=str(d / labels), out_dir=str(d / out),
                       model="convnet-w16", schedule="soft:1,hard:1", epochs=2, test_data="fashion-mnist",
                       test_subset=100, threads=1)


def _worker(rank: int, world: int, ports: list[int], d: str) -> None:
    d = Path(d)
    torch.set_num_threads(1)
    _torchrun_env(rank, world, ports[0])
    res = relabel(_relabel_cfg(d, "dist.h5"), progress=False)
    _torchrun_env(rank, world, ports[1])  # a fresh process group for the next stage, as a new torchrun would
    out = train(_train_cfg(d, "dist.h5", "train-dist"), progress=False)
    params = {k: v.detach().numpy().tolist() for k, v in out["model"].state_dict().items()}
    (d / f"rank{rank}.json").write_text(json.dumps({"params": params, "relabel": res["record"],
                                                     "bytes": res["bytes"]}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """40 Fashion-MNIST images, an untrained ConvNet teacher; relabel + train under 2 gloo ranks."""
    d = tmp_path_factory.mktemp("dist")
    ds = fashion_mnist("train").subset(40, seed=0)
    save_npz(d / "images.npz", ImageDataset(ds.images, ds.labels, 10, "fmnist-40"))
    torch.manual_seed(0)
    teacher = build_model("convnet-w16", 10, 1, 28)
    save_checkpoint(d / "teacher.pt", teacher, {"model": "convnet-w16", "num_classes": 10, "in_channels": 1,
                                                "image_size": 28, "mean": [0.286], "std": [0.353]})
    tmp.spawn(_worker, args=(WORLD, [_free_port(), _free_port()], str(d)), nprocs=WORLD, join=True)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        assert k not in os.environ  # the workers' environment did not leak into this process
    return d


def test_merged_relabel_equals_one_process(run):
    one = relabel(_relabel_cfg(run, "one.h5"), progress=False)  # no WORLD_SIZE: one process
    assert one["record"]["batches_written"] == 10
    r0 = json.loads((run / "rank0.json").read_text())
    assert r0["relabel"]["batches_written"] == 10 and r0["relabel"]["records"] == 80  # both ranks' work
    assert not (run / "dist.h5.shards").exists()  # merged, shards removed
    with LabelFile(run / "dist.h5") as a, LabelFile(one["labels"]) as b:
        assert a.num_epochs == b.num_epochs == 2 and len(a) == len(b) == 10
        assert a.user_attrs["relabel"] == b.user_attrs["relabel"]
        for e in range(2):
            np.testing.assert_array_equal(a.order(e), b.order(e))
        for x, y in zip(a.batches(), b.batches()):
            assert (x.epoch, x.batch) == (y.epoch, y.batch)
            np.testing.assert_array_equal(x.indices, y.indices)
            np.testing.assert_array_equal(x.boxes, y.boxes)
            np.testing.assert_array_equal(x.flips, y.flips)
            np.testing.assert_array_equal(x.logits, y.logits)
            assert x.mix == y.mix
    cfg = json.loads((run / "dist.config.json").read_text())
    assert cfg["world_size"] == WORLD and cfg["stored_epochs"] == 2


def test_ddp_ranks_end_with_the_same_weights_and_rank0_writes(run):
    p0, p1 = (json.loads((run / f"rank{r}.json").read_text())["params"] for r in range(WORLD))
    assert p0.keys() == p1.keys()
    for k in p0:
        np.testing.assert_array_equal(np.asarray(p0[k]), np.asarray(p1[k]), err_msg=k)
    torch.manual_seed(0)  # train's seed: the weights the student started from
    init = build_model("convnet-w16", 10, 1, 28).state_dict()
    assert any(not np.allclose(np.asarray(p0[k]), init[k].numpy()) for k in p0 if k.endswith("weight"))  # it trained
    rows = list(csv.DictReader(open(run / "train-dist" / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["test_acc"] != ""
    ckpt = torch.load(run / "train-dist" / "student.pt", map_location="cpu", weights_only=True)
    for k, v in ckpt["state_dict"].items():  # a plain checkpoint (no "module." prefix) holding the trained weights
        np.testing.assert_array_equal(v.numpy(), np.asarray(p0[k]))
    assert json.loads((run / "train-dist" / "student.config.json").read_text())["world_size"] == WORLD


def test_no_world_size_is_a_no_op(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with distributed("cpu") as ctx:
        assert ctx == DistContext() and not ctx.active
        assert run_collectively(ctx, lambda: 3) == [3]
        with pytest.raises(LabelStoreError, match="boom"):
            run_collectively(ctx, lambda: (_ for _ in ()).throw(LabelStoreError("boom")))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(LabelStoreError, match="torchrun"):
        with distributed("cpu"):
            pass
