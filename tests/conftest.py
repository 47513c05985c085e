"""Shared fixtures: small real label sets written through the public API."""
from __future__ import annotations

import numpy as np
import pytest

from labelstore import CropPolicy, LabelWriter, MixPolicy


def make_logits(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    """Teacher-like logits: one dominant class per record over a noisy background."""
    z = rng.normal(0, 2.0, size=(n, num_classes)).astype(np.float32)
    z[np.arange(n), rng.integers(0, num_classes, n)] += 8.0
    return z


def write_label_set(
    path,
    *,
    num_images=50,
    num_classes=10,
    epochs=3,
    batch_size=16,
    codec="dense16",
    crops="derived",
    orders="derived",
    mix_policy=None,
    mix="derived",
    seed=7,
    image_size=(32, 32),
    fingerprint="sha256:test",
    data_seed=0,
):
    """Write a label set; returns the logits written, keyed by (epoch, batch)."""
    rng = np.random.default_rng(data_seed)
    written = {}
    with LabelWriter(
        path,
        num_classes=num_classes,
        num_images=num_images,
        codec=codec,
        seed=seed,
        image_fingerprint=fingerprint,
        image_sizes=image_size,
        crop_policy=CropPolicy(size=(24, 24)),
        mix_policy=mix_policy or MixPolicy(),
        crops=crops,
        orders=orders,
        mix=mix,
    ) as w:
        for e in range(epochs):
            order = rng.permutation(num_images) if orders == "explicit" else None
            w.begin_epoch(e, batch_size, order)
            for b in range(w.num_batches(e)):
                n = len(w.batch_indices(e, b))
                logits = make_logits(rng, n, num_classes)
                kw = {}
                if crops == "explicit":
                    sizes = np.broadcast_to(np.asarray(image_size), (n, 2))
                    h = rng.integers(1, sizes[:, 0] + 1)
                    wd = rng.integers(1, sizes[:, 1] + 1)
                    top = rng.integers(0, sizes[:, 0] - h + 1)
                    left = rng.integers(0, sizes[:, 1] - wd + 1)
                    kw["boxes"] = np.stack([top, left, h, wd], 1)
                    kw["flips"] = rng.random(n) < 0.5
                if mix == "explicit" and mix_policy is not None and mix_policy.kind != "none":
                    kw["mix"] = w.derived_mix(e, b)
                w.write_batch(e, b, logits, **kw)
                written[(e, b)] = (logits, kw)
    return written


@pytest.fixture
def label_file(tmp_path):
    path = tmp_path / "labels.h5"
    written = write_label_set(path)
    return path, written
