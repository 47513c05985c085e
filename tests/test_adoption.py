"""Adoption in existing loops: pairs + StepLoss, the DataLoader route, resume, label prefetch, lazy
targets and an SRe2L-shaped loop — each giving the very steps ReplayLoader gives (TorchBackend here;
the FFCV backend in test_adoption_ffcv.py)."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelstore import LabelStoreError, MixPolicy
from loaders import ReplayLoader, SRe2LBatches, StepLoss, StepTargets, TorchBackend
from loaders.torch_data import ReplayBatchSampler, ReplayDataset
from test_loaders_replay import MEAN, STD, photo_crops, relabel

HALD = dict(schedule="soft:2,hard:2,soft:2", epochs=6, pool="without_replacement")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """30 photo crops, 2 stored epochs of 4 CutMix batches (the last short)."""
    images, labels = photo_crops(30, variable=False)
    path = tmp_path_factory.mktemp("adopt") / "l.h5"
    relabel(path, TorchBackend(images, labels), epochs=2)
    return path, images, labels


def loader_of(labelled, schedule=HALD["schedule"], epochs=HALD["epochs"], backend=None, **kw):
    path, images, labels = labelled
    kw.setdefault("pool", HALD["pool"] if epochs > 2 else None)
    return ReplayLoader(path, backend or TorchBackend(images, labels), schedule, epochs=epochs, mean=MEAN, std=STD,
                        seed=5, **kw)


def all_steps(loader):
    return [s for _ in range(loader.epochs) for s in loader]


def assert_same(x, y, step):
    assert torch.equal(x, step.images) and torch.equal(y.targets, step.targets)
    assert y.step_kind == step.kind and y.kind == (step.kind,) * len(step)


@pytest.mark.parametrize("schedule,epochs,kinds", [(HALD["schedule"], 6, {"soft", "hard"}),
                                                   ("blend:start=1,end=0|drift:beta=0.5", 2, {"blend"}),
                                                   ("ratio:hard=0.5", 2, {"soft", "hard"})])
def test_pairs_and_step_loss_apply_each_steps_loss(labelled, schedule, epochs, kinds):
    steps = all_steps(loader_of(labelled, schedule, epochs))
    pairs = loader_of(labelled, schedule, epochs).pairs()
    assert len(pairs) == 4
    criterion, seen = StepLoss(), set()
    torch.manual_seed(0)
    for _ in range(epochs):
        for (x, y), step in zip(pairs, steps[:4]):  # the tuple-minded loop
            assert_same(x, y, step)
            out = torch.randn(len(step), 6)
            torch.testing.assert_close(criterion(out, y), step.loss(out))
            torch.testing.assert_close(criterion(out, step), step.loss(out))
            seen.add(step.kind)
        steps = steps[4:]
    assert seen == kinds
    out, ids = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 4])
    torch.testing.assert_close(criterion(out, ids), F.cross_entropy(out, ids))  # a validation loop's labels


def test_a_timm_shaped_loop_trains_on_pairs(labelled):
    """timm's train_one_epoch without its prefetcher: input.to(device), loss_fn(output, target), input.size(0)."""
    loader_train, loss_fn, device = loader_of(labelled).pairs(), StepLoss(), torch.device("cpu")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 6))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    seen = 0
    for epoch in range(6):
        loader_train.set_epoch(epoch)
        last_idx = len(loader_train) - 1
        for batch_idx, (input, target) in enumerate(loader_train):
            input, target = input.to(device), target.to(device)
            input = input.contiguous(memory_format=torch.channels_last)
            output = model(input)
            loss = loss_fn(output, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert np.isfinite(loss.item()) and batch_idx <= last_idx
            seen += input.size(0)
    assert seen == 6 * 30


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_route_yields_the_loaders_steps(labelled, workers):
    steps = all_steps(loader_of(labelled))
    # a backend with workers of its own runs in-process inside DataLoader workers (daemons have no children)
    ld = loader_of(labelled, backend=TorchBackend(labelled[1], labelled[2], num_workers=1 if workers else 0))
    sampler = ReplayBatchSampler(ld)
    dl = torch.utils.data.DataLoader(ReplayDataset(ld), batch_sampler=sampler, num_workers=workers)
    assert len(dl) == 4 and sampler.batch_size == 8
    got = []
    for epoch in range(6):
        sampler.set_epoch(epoch)  # what Lightning / Accelerate call each epoch
        got += list(dl)
    assert len(got) == len(steps) == 24
    for (x, y), step in zip(got, steps):
        assert isinstance(y, StepTargets)
        assert_same(x, y, step)
        out = torch.randn(len(step), 6)
        torch.testing.assert_close(StepLoss()(out, y), step.loss(out))
    assert [s.kind for s in steps] == ["soft"] * 8 + ["hard"] * 8 + ["soft"] * 8


def test_dataloader_route_keeps_the_pixel_contract_and_the_loaders_settings(labelled):
    path, images, labels = labelled
    with pytest.raises(LabelStoreError, match="other pixels than the teacher labelled"):
        ReplayLoader(path, TorchBackend(images, labels), epochs=2, mean=(0.4, 0.4, 0.4), std=STD)
    kw = dict(schedule="soft", epochs=2, dtype=torch.bfloat16, allow_pixel_mismatch=True)
    steps = all_steps(loader_of(labelled, **kw))
    dl = loader_of(labelled, **kw).dataloader()
    got = [b for _ in range(2) for b in dl]
    assert len(got) == 8 and all(torch.equal(x, s.images) and x.dtype == torch.bfloat16 for (x, _), s in zip(got, steps))


def test_dataloader_batches_are_refused_when_they_mix_planned_batches(labelled):
    ld = loader_of(labelled)
    dl = torch.utils.data.DataLoader(ReplayDataset(ld), batch_size=8,
                                     sampler=[k for ks in ReplayBatchSampler(ld) for k in ks])
    with pytest.raises(LabelStoreError, match="mixes records of several planned batches"):
        list(dl)
    with pytest.raises(LabelStoreError, match="not batch_size"):
        ld.dataloader(batch_size=8)
    with pytest.raises(LabelStoreError, match="indexed by ReplayKey"):
        ReplayDataset(ld)[3]


def test_resume_mid_epoch_gives_the_same_steps(labelled):
    whole = [(s.kind, tuple(s.indices), hashlib.sha1(s.images.numpy().tobytes()).hexdigest())
             for s in all_steps(loader_of(labelled))]
    first = loader_of(labelled)
    for _ in range(2):  # two epochs, then 3 steps of the third (a hard epoch)
        list(first)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    assert (state["epoch"], state["step"]) == (2, 3)
    again = loader_of(labelled)
    again.load_state_dict(state)
    again.set_epoch(2)  # a loop that sets the epoch it resumes keeps the position
    rest = [(s.kind, tuple(s.indices), hashlib.sha1(s.images.numpy().tobytes()).hexdigest())
            for e in range(2, 6) for s in again]
    assert rest == whole[8 + 3:]
    # the DataLoader route resumes the same way, from the count of steps trained
    ld = loader_of(labelled)
    sampler = ReplayBatchSampler(ld)
    sampler.load_state_dict({"epoch": 4, "step": 2, "plan": ld.plan_settings()})
    dl = torch.utils.data.DataLoader(ReplayDataset(ld), batch_sampler=sampler)
    got = [hashlib.sha1(x.numpy().tobytes()).hexdigest() for e in range(4, 6) for x, _ in dl]
    assert got == [h for _, _, h in whole[16 + 2:]]
    with pytest.raises(LabelStoreError, match="seed: saved 5, now 6"):
        ReplayLoader(labelled[0], TorchBackend(*labelled[1:]), HALD["schedule"], epochs=6, pool=HALD["pool"],
                     mean=MEAN, std=STD, seed=6).load_state_dict(state)
    end = loader_of(labelled)
    end.load_state_dict({"epoch": 1, "step": 4})  # a finished epoch: continue with the next
    assert end.epoch == 2 and len(list(end)) == 4


def test_label_prefetch_gives_the_same_steps(labelled):
    def run(depth):
        ld = loader_of(labelled, "soft|drift:beta=0.5", 2, label_prefetch=depth, segment=3)
        return [s for _ in range(2) for s in ld]

    off, on = run(0), run(3)
    assert len(off) == len(on) == 8
    for a, b in zip(off, on):
        assert torch.equal(a.images, b.images) and torch.equal(a.logits, b.logits)
        assert torch.equal(a.targets, b.targets) and torch.equal(a.gated, b.gated)
    early = loader_of(labelled, label_prefetch=2)
    next(iter(early))  # abandoned with reads in flight: the thread is shut down, nothing leaks
    assert len(list(early)) == 4


def test_soft_targets_are_computed_only_when_read(labelled):
    step = next(iter(loader_of(labelled, "soft", 2, temperature=3.0)))
    assert step._targets is None  # training reads step.loss only
    torch.testing.assert_close(step.targets, torch.softmax(step.logits / 3.0, -1), rtol=0, atol=0)
    assert step._targets is not None and "Step soft epoch 0 batch 0" in repr(step)


def sre2l_mix_aug(images, mix_type, rand_index, lam, bbox):
    """What an SRe2L-style script does with a replayed batch (mode 'fkd_load')."""
    if mix_type == "cutmix":
        bbx1, bby1, bbx2, bby2 = bbox
        images[:, :, bbx1:bbx2, bby1:bby2] = images[rand_index, :, bbx1:bbx2, bby1:bby2]
        return images
    return lam * images + (1 - lam) * images[rand_index]


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_an_sre2l_shaped_loop_trains_on_the_pixels_the_teacher_labelled(tmp_path, mix):
    images, labels = photo_crops(30, variable=True)
    backend = TorchBackend(images, labels)
    teacher, _ = relabel(tmp_path / "l.h5", backend, epochs=2, mix=MixPolicy(mix))
    train_loader = SRe2LBatches(ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=2))
    assert train_loader.mix_type == mix and len(train_loader) == 4
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 6))
    optimizer, temperature, seen = torch.optim.SGD(model.parameters(), lr=0.05), 4.0, []
    loss_function_kl = torch.nn.KLDivLoss(reduction="batchmean")
    for epoch in range(2):
        train_loader.set_epoch(epoch)
        for batch_idx, batch_data in enumerate(train_loader):
            images_, target, flip_status, coords_status = batch_data[0]
            mix_index, mix_lam, mix_bbox, soft_label = batch_data[1:]
            images_, soft_label = images_.float(), soft_label.float()
            images_ = sre2l_mix_aug(images_, train_loader.mix_type, mix_index, mix_lam, mix_bbox)
            seen += [hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in images_]
            output = model(images_)
            loss = loss_function_kl(F.log_softmax(output / temperature, dim=1), F.softmax(soft_label / temperature, dim=1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss) and target.dtype == torch.long and flip_status.dtype == torch.bool
            assert coords_status.shape == (len(target), 4) and ((coords_status >= 0) & (coords_status <= 1)).all()
    assert seen == teacher.seen  # bit for bit, every record, in order


def test_sre2l_batches_refuse_hard_steps(labelled):
    with pytest.raises(LabelStoreError, match="SRe2L's loop trains every step on stored soft labels.*pairs"):
        SRe2LBatches(loader_of(labelled))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_building_steps_never_synchronises_the_device(labelled):
    ld = loader_of(labelled, "soft:2,hard:2,soft:2|drift", 6, device="cuda")
    it = iter(ld)
    next(it)  # warm-up: normalisation constants and pinned buffers are made once
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in it:
            step.loss(torch.zeros(len(step), 6, device="cuda", requires_grad=True)).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
