"""The DataLoader route and pairs over the FFCV backend: the steps ReplayLoader gives, HALD schedule, a pool."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv")

from benchmarks._images import fixed_images  # noqa: E402
from labelstore import CropPolicy, LabelWriter, MixPolicy  # noqa: E402
from loaders import ReplayLoader, StepLoss, record_labels  # noqa: E402
from loaders.torch_data import ReplayBatchSampler, ReplayDataset
from loaders.beton import write_beton  # noqa: E402
from loaders.ffcv_backend import FFCVBackend  # noqa: E402

N, BS = 28, 8  # 4 batches per epoch, the last one short


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("ffcv_adopt")
    images = fixed_images(N, size=40, seed=3)
    write_beton(images, root / "i.beton", labels=np.arange(N) % 5, progress=False)
    backend = FFCVBackend(root / "i.beton", num_workers=1)
    w = torch.randn(3 * 16, 5, generator=torch.Generator().manual_seed(0))
    with LabelWriter(root / "l.h5", num_classes=5, num_images=N, seed=2, image_fingerprint=backend.fingerprint,
                     image_sizes=backend.image_sizes, crop_policy=CropPolicy(size=(24, 24)),
                     mix_policy=MixPolicy("cutmix")) as writer:
        record_labels(writer, backend, lambda x: torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1) @ w,
                      epochs=2, batch_size=BS, progress=False)
    return root, backend


def test_dataloader_route_and_pairs_over_ffcv_give_the_loaders_steps(recorded):
    root, backend = recorded

    def loader():
        return ReplayLoader(root / "l.h5", backend, "soft:1,hard:1,soft:2", epochs=4, pool="without_replacement",
                            seed=7)

    ref = loader()
    steps = [(s.images.clone(), s.targets.clone(), s.kind, s.loss(torch.ones(len(s), 5))) for _ in range(4) for s in ref]
    ld = loader()
    sampler = ReplayBatchSampler(ld)
    got = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        got += list(torch.utils.data.DataLoader(ReplayDataset(ld), batch_sampler=sampler))
    forked = loader().dataloader(num_workers=2)  # FFCV inside forked DataLoader workers
    from_workers = [b for _ in range(4) for b in forked]
    assert len(from_workers) == 16 and all(torch.equal(x, a) for (x, _), (a, *_) in zip(from_workers, steps))
    tuples = loader().pairs()
    pairs = [(x.clone(), y) for _ in range(4) for x, y in tuples]
    assert len(got) == len(pairs) == len(steps) == 16
    assert [k for _, _, k, _ in steps] == ["soft"] * 4 + ["hard"] * 4 + ["soft"] * 8
    for (x, y), (px, py), (images, targets, kind, loss) in zip(got, pairs, steps):
        assert torch.equal(x, images) and torch.equal(y.targets, targets) and y.step_kind == kind
        assert torch.equal(px, images) and torch.equal(py.targets, targets)
        torch.testing.assert_close(StepLoss()(torch.ones(len(x), 5), y), loss)
