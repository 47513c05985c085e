"""ReplayLoader + record mode on real photos: exact replay, schedules in action, drift gating, bad input."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from labelstore import CropPolicy, LabelFile, LabelStoreError, LabelWriter, MixPolicy, image_set_fingerprint
from loaders import ReplayLoader, TorchBackend, record_labels
from loaders.images import as_image_source

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def photo_crops(n: int, *, variable: bool, seed: int = 0):
    """``n`` real images: random regions of skimage photos, class = which photo (6 classes)."""
    import skimage.data
    from torchvision.transforms.v2 import functional as TF

    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    g = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        c = i % len(photos)
        p = photos[c]
        side = int(g.integers(120, 280))
        top, left = int(g.integers(0, p.shape[0] - side)), int(g.integers(0, p.shape[1] - side))
        out = (int(g.integers(24, 64)), int(g.integers(24, 64))) if variable else (40, 40)
        t = torch.from_numpy(p[top : top + side, left : left + side]).permute(2, 0, 1)
        images.append(TF.resize(t, list(out), antialias=True).permute(1, 2, 0).numpy().copy())
        labels.append(c)
    return (images if variable else np.stack(images)), np.asarray(labels)


class HashingTeacher:
    """A fixed random linear teacher over 4x4-pooled pixels that records a hash of every image it sees."""

    def __init__(self, num_classes: int = 6, channels: int = 3, seed: int = 1):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(channels * 16, num_classes, generator=g)
        self.seen: list[str] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += [hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in images]
        return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1) @ self.w * 3.0


def relabel(path, backend, *, epochs=2, batch_size=8, crops="derived", mix=MixPolicy("cutmix"), teacher=None,
            size=(24, 24), seed=3, gray=False):
    teacher = teacher or HashingTeacher()
    with LabelWriter(path, num_classes=6, num_images=backend.num_images, seed=seed,
                     image_fingerprint=backend.fingerprint, image_sizes=backend.image_sizes,
                     crop_policy=CropPolicy(size=size), mix_policy=mix, crops=crops, mix="derived") as w:
        summary = record_labels(w, backend, teacher, epochs=epochs, batch_size=batch_size, mean=MEAN, std=STD,
                                gray=gray, progress=False)
    return teacher, summary


@pytest.fixture(scope="module")
def fixed():
    images, labels = photo_crops(30, variable=False)
    return images, labels


@pytest.mark.parametrize("variable,crops", [(False, "derived"), (True, "derived"), (True, "explicit")])
def test_record_then_replay_shows_the_student_the_labelled_pixels(tmp_path, variable, crops):
    images, labels = photo_crops(30, variable=variable)
    backend = TorchBackend(images, labels)
    teacher, summary = relabel(tmp_path / "l.h5", backend, crops=crops)
    assert summary["batches_written"] == 2 * 4 and summary["records"] == 60
    loader = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=2, mean=MEAN, std=STD, temperature=2.0)
    assert len(loader) == 4
    replayed, mixed = [], 0
    with LabelFile(tmp_path / "l.h5") as f:
        for epoch in range(2):
            loader.set_epoch(epoch)
            for step in loader:
                assert step.kind == "soft" and step.stored == (epoch, step.batch)
                replayed += [hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in step.images]
                stored = f[epoch, step.batch]
                np.testing.assert_array_equal(step.indices, stored.indices)
                torch.testing.assert_close(step.targets, torch.softmax(torch.from_numpy(stored.logits) / 2.0, -1))
                mixed += step.mix is not None
    assert replayed == teacher.seen  # bit-identical pixels, same order, every record
    assert len(set(replayed)) > 50 and mixed == 8


def test_stored_logits_are_the_teachers(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    teacher = HashingTeacher()
    outputs = []

    def keep(x):
        out = teacher(x)
        outputs.append(out)
        return out

    relabel(tmp_path / "l.h5", backend, teacher=keep, epochs=1)
    loader = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, mean=MEAN, std=STD)
    for step, out in zip(loader, outputs):
        torch.testing.assert_close(step.logits, out.half().float())


def test_resume_skips_written_batches(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    path = tmp_path / "l.h5"
    w = LabelWriter(path, num_classes=6, num_images=30, seed=3, image_fingerprint=backend.fingerprint,
                    image_sizes=backend.image_sizes, crop_policy=CropPolicy(size=(24, 24)))
    record_labels(w, backend, HashingTeacher(), epochs=1, batch_size=8, mean=MEAN, std=STD, progress=False)
    w.close()  # a run stopped after epoch 0
    w = LabelWriter(path, num_classes=6, num_images=30, seed=3, image_fingerprint=backend.fingerprint,
                    image_sizes=backend.image_sizes, crop_policy=CropPolicy(size=(24, 24)))
    s = record_labels(w, backend, HashingTeacher(), epochs=2, batch_size=8, mean=MEAN, std=STD, progress=False)
    w.finalize()
    assert (s["batches_written"], s["batches_skipped"]) == (4, 4)
    assert LabelFile(path).num_epochs == 2


def test_hald_schedule_with_pool_trains_a_real_loop(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=2)
    loader = ReplayLoader(tmp_path / "l.h5", backend, "soft:2,hard:2,soft:2", epochs=6, mean=MEAN, std=STD,
                          pool="without_replacement", seed=5)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 6))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    kinds, used = [], set()
    for epoch in range(6):
        for step in loader:  # the three-line adoption
            opt.zero_grad()
            loss = step.loss(model(step.images))
            loss.backward()
            opt.step()
            assert torch.isfinite(loss) and loss.ndim == 0
            kinds.append(step.kind)
            if step.kind == "soft":
                used.add(step.stored)
            else:
                assert step.stored is None and step.targets.shape == (len(step), 6)
                torch.testing.assert_close(step.targets.sum(1), torch.ones(len(step)))
                assert step.targets.max() <= 0.9 + 0.1 / 6 + 1e-6  # smoothing 0.1: top class gets 0.9 + eps/C
    assert kinds == ["soft"] * 8 + ["hard"] * 8 + ["soft"] * 8
    assert used == {(e, b) for e in range(2) for b in range(4)}  # without replacement: the whole pool in 2 epochs
    with pytest.raises(LabelStoreError, match="all 6 epochs"):
        next(iter(loader))
    assert len(loader) == 4 and [p.stored for p in loader.plan(2)] == [None] * 4
    loader.set_epoch(5)
    assert [s.stored for s in loader] == [p.stored for p in loader.plan(5)]  # plan = what iteration replays


def test_auto_hald_takes_its_hard_share_from_the_label_file(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=2)  # S=2: hard share 0.5 / 2 of 8 epochs = 2 hard epochs
    loader = ReplayLoader(tmp_path / "l.h5", backend, "hald:hard=auto", epochs=8, mean=MEAN, std=STD,
                          pool="without_replacement")
    assert str(loader.schedule) == "hald:hard=0.25"
    assert [loader.plan(e)[0].plan.kind for e in range(8)] == ["soft"] * 3 + ["hard"] * 2 + ["soft"] * 3


def test_hard_steps_are_fresh_seeded_crops(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1)

    def hashes(seed, epoch):
        ld = ReplayLoader(tmp_path / "l.h5", backend, "hard", epochs=3, mean=MEAN, std=STD, seed=seed)
        ld.set_epoch(epoch)
        return [(tuple(s.indices), hashlib.sha1(s.images.numpy().tobytes()).hexdigest()) for s in ld]

    a = hashes(0, 1)
    assert a == hashes(0, 1) and a != hashes(0, 2) and a != hashes(1, 1)
    assert sorted(i for idx, _ in a for i in idx) == list(range(30))
    # hard crops are not the stored crops: the loader's own stream
    soft = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, mean=MEAN, std=STD)
    assert not ({h for _, h in hashes(0, 0)} & {hashlib.sha1(s.images.numpy().tobytes()).hexdigest() for s in soft})


def test_hard_cutmix_targets_are_linear_mixes(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1)
    ld = ReplayLoader(tmp_path / "l.h5", backend, "hard", epochs=1, mean=MEAN, std=STD, label_smoothing=0.0)
    step = next(iter(ld))
    m = step.mix
    assert m is not None and m.kind == "cutmix"
    y = torch.nn.functional.one_hot(torch.as_tensor(labels[step.indices]), 6).float()
    torch.testing.assert_close(step.targets, m.lam * y + (1 - m.lam) * y[torch.as_tensor(m.partner)])
    logits = torch.randn(len(step), 6)
    torch.testing.assert_close(step.loss(logits), -(step.targets * torch.log_softmax(logits, 1)).sum(1).mean())


def test_drift_gating_picks_exactly_the_records_whose_top1_is_wrong(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1, mix=MixPolicy())  # a random teacher: many top-1s are wrong
    T = 4.0
    for beta in (1.0, 0.5):
        ld = ReplayLoader(tmp_path / "l.h5", backend, f"soft|drift:beta={beta}", epochs=1, mean=MEAN, std=STD,
                          label_smoothing=0.0, temperature=T)
        n_gated = 0
        for step in ld:
            want = step.logits.argmax(1).numpy() != labels[step.indices]
            np.testing.assert_array_equal(step.gated.numpy(), want)
            n_gated += want.sum()
            s = torch.randn(len(step), 6)
            p = torch.softmax(step.logits / T, 1)
            kd = (p * (torch.log(p) - torch.log_softmax(s / T, 1))).sum(1) * T * T
            ce = -torch.log_softmax(s, 1)[torch.arange(len(step)), torch.as_tensor(labels[step.indices])]
            g = torch.as_tensor(want).float() * beta
            torch.testing.assert_close(step.loss(s), ((1 - g) * kd + g * ce).mean())
            hard_rows = step.targets[torch.as_tensor(want)]
            if beta == 1.0 and len(hard_rows):
                assert (hard_rows.max(1).values == 1).all()
        assert 0 < n_gated < 30


def test_blend_weights_the_two_losses(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=2)
    ld = ReplayLoader(tmp_path / "l.h5", backend, "blend:start=1,end=0", epochs=2, mean=MEAN, std=STD)
    ws = []
    for _ in range(2):
        for step in ld:
            s = torch.randn(len(step), 6)
            p = torch.softmax(step.logits / 4.0, 1)
            kd = ((p * (torch.log(p) - torch.log_softmax(s / 4.0, 1))).sum(1) * 16).mean()
            ce = -(step.hard_targets * torch.log_softmax(s, 1)).sum(1).mean()
            torch.testing.assert_close(step.loss(s), step.weight * kd + (1 - step.weight) * ce)
            ws.append(step.weight)
    assert ws == [1.0] * 4 + [0.0] * 4


def test_gray_channels_last_and_bf16(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)  # gray (N, H, W)
    backend = TorchBackend(raw, np.arange(20) % 6)
    assert backend.fingerprint == image_set_fingerprint(raw)
    relabel(tmp_path / "l.h5", backend, epochs=1, teacher=HashingTeacher(channels=1), size=(16, 16), gray=True)
    # gray and the recorded mean/std come from the file; bf16 input is another pixel dtype: said so
    ld = ReplayLoader(tmp_path / "l.h5", backend, epochs=1, dtype=torch.bfloat16, channels_last=True,
                      allow_pixel_mismatch=True)
    step = next(iter(ld))
    assert step.images.shape == (8, 1, 16, 16) and step.images.dtype == torch.bfloat16
    assert step.images.is_contiguous(memory_format=torch.channels_last)


def test_image_sources_and_fingerprints(tmp_path, fixed):
    from PIL import Image

    images, labels = fixed
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
    for i in range(6):
        Image.fromarray(images[i]).save(tmp_path / f"c{i % 2}" / f"{i}.png")
    src = as_image_source(tmp_path)
    assert src.num_images == 6 and list(src.labels) == [0, 0, 0, 1, 1, 1]
    assert src.fingerprint == image_set_fingerprint([images[i] for i in (0, 2, 4, 1, 3, 5)])
    ds = [(torch.from_numpy(im).permute(2, 0, 1), int(y)) for im, y in zip(images[:5], labels[:5])]
    src = as_image_source(ds)
    assert src.fingerprint == image_set_fingerprint(images[:5]) and list(src.labels) == list(labels[:5])
    assert as_image_source(list(images[:5])).fingerprint == image_set_fingerprint(images[:5])
    np.testing.assert_array_equal(as_image_source(images).image_sizes, np.full((30, 2), 40))
    with pytest.raises(LabelStoreError, match="uint8"):
        as_image_source(images.astype(np.float32))


# -- bad input: every one is a LabelStoreError that says what to do ------------------------
@pytest.fixture(scope="module")
def stored(tmp_path_factory, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    path = tmp_path_factory.mktemp("bad") / "l.h5"
    relabel(path, backend, epochs=2)
    return path, backend, images, labels


def test_wrong_images_fingerprint(stored):
    path, _, images, labels = stored
    other = images.copy()
    other[0, 0, 0, 0] ^= 1
    with pytest.raises(LabelStoreError, match="another image set"):
        ReplayLoader(path, TorchBackend(other, labels), epochs=1)


def test_image_count_differs(stored):
    path, _, images, labels = stored
    with pytest.raises(LabelStoreError, match="labels 30 images but the backend holds 29"):
        ReplayLoader(path, TorchBackend(images[:29], labels[:29]), epochs=1)


def test_more_label_epochs_than_stored_needs_a_pool(stored):
    path, backend, _, _ = stored
    with pytest.raises(LabelStoreError, match="pass a pool policy"):
        ReplayLoader(path, backend, "soft:3,hard:1", epochs=4)
    ReplayLoader(path, backend, "soft:3,hard:1", epochs=4, pool="cycle")  # fine with a pool
    ReplayLoader(path, backend, "soft:1,hard:2,soft:1", epochs=4)  # 2 label epochs, 2 stored


def test_irreconcilable_batch_size(stored):
    path, backend, _, _ = stored
    with pytest.raises(LabelStoreError, match="stores batches of 8.*pass batch_size=8"):
        ReplayLoader(path, backend, "soft", epochs=2, batch_size=16)
    assert ReplayLoader(path, backend, "hard", epochs=2, batch_size=16).num_batches == 2  # hard: any size


def test_schedule_and_labels_errors(stored):
    path, backend, images, _ = stored
    with pytest.raises(LabelStoreError, match="labels_of_images"):
        ReplayLoader(path, TorchBackend(images), "hald", epochs=4, pool="cycle")
    with pytest.raises(LabelStoreError, match="covers 4 epochs but training runs 5"):
        ReplayLoader(path, backend, "soft:2,hard:2", epochs=5)
    with pytest.raises(LabelStoreError, match="unknown schedule"):
        ReplayLoader(path, backend, "sometimes", epochs=2)


def test_record_checks_the_writer_matches_the_images(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    w = LabelWriter(tmp_path / "l.h5", num_classes=6, num_images=30, image_fingerprint="sha256:" + "0" * 64,
                    image_sizes=(40, 40), crop_policy=CropPolicy(size=(24, 24)))
    with pytest.raises(LabelStoreError, match="another image set"):
        record_labels(w, backend, HashingTeacher(), epochs=1, batch_size=8, progress=False)
    w2 = LabelWriter(tmp_path / "m.h5", num_classes=6, num_images=30, image_sizes=(40, 40))
    with pytest.raises(LabelStoreError, match=r"expected \(8, 6\)"):
        record_labels(w2, backend, lambda x: torch.zeros(len(x), 5), epochs=1, batch_size=8, progress=False)


def test_worker_processes_give_the_same_steps(tmp_path, fixed):
    images, labels = fixed
    relabel(tmp_path / "l.h5", TorchBackend(images, labels), epochs=2)

    def run(workers):
        backend = TorchBackend(images, labels, num_workers=workers)
        ld = ReplayLoader(tmp_path / "l.h5", backend, "ratio:hard=0.5", epochs=2, mean=MEAN, std=STD, segment=3)
        return [(s.kind, tuple(s.indices), hashlib.sha1(s.images.numpy().tobytes()).hexdigest()) for _ in range(2)
                for s in ld]

    one = run(0)
    assert [k for k, _, _ in one] == ["soft", "hard"] * 4
    assert run(2) == one  # persistent workers across segments and epochs, same pixels


def test_hard_steps_can_use_their_own_crop_policy(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1)
    ld = ReplayLoader(tmp_path / "l.h5", backend, "ratio:hard=0.5", epochs=1, mean=MEAN, std=STD, hard_mix=None,
                      hard_crop=CropPolicy(size=(16, 16), scale=(0.5, 1.0)))
    shapes = [(s.kind, tuple(s.images.shape[-2:]), s.mix is None) for s in ld]
    assert shapes == [("soft", (24, 24), False), ("hard", (16, 16), True)] * 2


def test_stopping_early_then_iterating_again(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels, num_workers=1)
    relabel(tmp_path / "l.h5", backend, epochs=1)
    ld = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, mean=MEAN, std=STD, segment=2)
    first = next(iter(ld))  # abandoned after one step: the epoch does not advance
    again = list(ld)
    assert len(again) == 4 and torch.equal(first.images, again[0].images)
