"""Real data loaders: Fashion-MNIST idx files, .npz arrays, image folders, skimage photos."""

import numpy as np
import pytest

from distill.data import (
    fashion_mnist,
    from_arrays,
    load_fashion_mnist,
    load_image_folder,
    load_npz,
    open_dataset,
    save_npz,
    skimage_photos,
)
from labelstore.errors import LabelStoreError


def test_fashion_mnist_shapes_and_labels():
    x, y = load_fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    assert np.array_equal(np.bincount(y), np.full(10, 6000))
    xt, yt = load_fashion_mnist("test")
    assert xt.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(yt), np.full(10, 1000))
    # real images, not blank: mean pixel of Fashion-MNIST train is ~72.9
    assert 70 < x.mean() < 76


def test_fashion_mnist_dataset_and_subset():
    ds = fashion_mnist("test")
    assert ds.images.shape == (10000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.in_channels == 1 and ds.image_size == 28
    sub = ds.subset(200, seed=1)
    assert len(sub) == 200
    assert np.array_equal(np.bincount(sub.labels, minlength=10), np.full(10, 20))


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(LabelStoreError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(LabelStoreError, match="train"):
        load_fashion_mnist("validation")


def test_skimage_photos_are_colour_uint8():
    pytest.importorskip("skimage")
    photos = skimage_photos()
    assert len(photos) == 7
    for p in photos:
        assert p.dtype == np.uint8 and p.ndim == 3 and p.shape[-1] == 3
    assert photos[1].shape == (300, 451, 3)  # chelsea


def test_npz_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    ds = from_arrays(rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), np.arange(12) % 4)
    assert ds.num_classes == 4
    p = save_npz(tmp_path / "a.npz", ds)
    back = load_npz(p)
    assert np.array_equal(back.images, ds.images) and np.array_equal(back.labels, ds.labels)
    assert open_dataset(str(p)).num_classes == 4
    with pytest.raises(LabelStoreError, match="one label per image"):
        from_arrays(ds.images, np.arange(5))
    with pytest.raises(LabelStoreError, match="labels must lie"):
        from_arrays(ds.images, np.arange(12), num_classes=3)
    with pytest.raises(LabelStoreError, match="unknown data set"):
        open_dataset("no-such-thing")


def test_image_folder(tmp_path):
    from PIL import Image

    photos = skimage_photos(("chelsea", "coffee"))
    for name, img in zip(("cat", "cup"), photos):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(img).save(tmp_path / "train" / name / f"{i}.png")
    ds = open_dataset(str(tmp_path), split="train", image_size=32)
    assert ds.images.shape == (4, 32, 32, 3)
    assert ds.class_names == ["cat", "cup"] and list(ds.labels) == [0, 0, 1, 1]
    with pytest.raises(LabelStoreError, match="image_size"):
        load_image_folder(tmp_path / "train")
