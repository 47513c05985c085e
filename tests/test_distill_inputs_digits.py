"""A second data set, exported as a user would: 8x8 grey digits to .npz and to a folder of PNGs.

`make_digits` renders the ten digits with PIL's bundled font (random size, shift, rotation,
stroke) and shrinks them to 8x8 with values 0..16 in float64, as scikit-learn's `load_digits`
hands them out (scikit-learn is not installed here). The tests of this file are about reading
such exports; the other `test_distill_inputs*` files run the pipeline on them.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from distill.cli import main
from distill.data import ImageDataset, has_test_split, load_npz, open_dataset
from distill.inputs import check_fits_record, data_record, holdout_split, open_test_set
from labelstore.errors import LabelStoreError


def make_digits(n_per_class: int = 140, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images float64 (N, 8, 8) with integer values 0..16, labels int64), shuffled."""
    rng = np.random.default_rng(seed)
    fonts = {s: ImageFont.load_default(size=s) for s in range(22, 31)}
    xs, ys = [], []
    for c in range(10):
        for _ in range(n_per_class):
            im = Image.new("L", (24, 24))
            dx, dy = rng.integers(-2, 3, 2)
            ImageDraw.Draw(im).text((12 + dx, 12 + dy), str(c), fill=255, font=fonts[int(rng.integers(22, 31))],
                                    anchor="mm", stroke_width=int(rng.integers(0, 2)), stroke_fill=255)
            im = im.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
            xs.append(np.round(np.asarray(im.resize((8, 8), Image.BOX), np.float64) / 255 * 16))
            ys.append(c)
    order = rng.permutation(len(ys))
    return np.stack(xs)[order], np.asarray(ys)[order]


def to_uint8(x: np.ndarray) -> np.ndarray:
    """What the error message tells the user to do with 0..16 values."""
    return (x * (255 / 16)).round().astype(np.uint8)


def export_npz(path, images, labels) -> str:
    np.savez(path, images=images, labels=labels)
    return str(path)


def export_pngs(root, images, labels) -> str:
    """root/<digit>/<i>.png, 8-bit grey PNGs."""
    for i, (img, y) in enumerate(zip(images, labels)):
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / str(y) / f"{i}.png")
    return str(root)


def test_digits_look_like_digits():
    x, y = make_digits(20)
    assert x.shape == (200, 8, 8) and x.dtype == np.float64
    assert x.min() == 0 and x.max() == 16 and np.array_equal(x, np.round(x))
    assert np.array_equal(np.bincount(y), np.full(10, 20))
    # a 1 is narrower than a 0: the classes differ in shape, not only by noise
    cols = lambda c: (x[y == c].mean(0).sum(0) > 4).sum()  # noqa: E731
    assert cols(1) < cols(0)


def test_float_pixels_say_what_was_given_and_how_to_fix(tmp_path):
    x, y = make_digits(140)
    path = export_npz(tmp_path / "digits.npz", x, y)  # what load_digits() gives, saved as is
    with pytest.raises(LabelStoreError) as e:
        load_npz(path)
    msg = str(e.value)
    assert "(1400, 8, 8) float64" in msg and "values 0..16" in msg and "(N,H,W,C)" not in msg
    assert "uint8" in msg and "0..255" in msg and "(x * (255 / 16)).round().astype(np.uint8)" in msg
    assert path in msg
    # the CLI: one line, exit 2
    assert main(["squeeze", "--data", path, "--out", str(tmp_path / "sq"), "--quiet"]) == 2


def test_other_array_mistakes_are_named_in_the_users_terms():
    x, y = make_digits(2)
    with pytest.raises(LabelStoreError, match=r"\(20, 64\) float64: flat rows.*x.reshape\(-1, 8, 8\)"):
        ImageDataset(x.reshape(20, 64), y, 10)
    with pytest.raises(LabelStoreError, match=r"channels first.*np.transpose\(x, \(0, 2, 3, 1\)\)"):
        ImageDataset(to_uint8(x)[:, None], y, 10)
    with pytest.raises(LabelStoreError, match=r"values 0..1;.*\(x \* 255\)"):
        ImageDataset(x / 16, y, 10)
    with pytest.raises(LabelStoreError, match="integer class ids"):
        ImageDataset(to_uint8(x), y + 0.5, 11)
    ok = ImageDataset(to_uint8(x), y, 10)
    assert ok.images.shape == (20, 8, 8, 1)


def test_grey_png_folder_stays_grey_and_has_no_test_split(tmp_path):
    x, y = make_digits(6)
    root = export_pngs(tmp_path / "digits", to_uint8(x), y)
    ds = open_dataset(root)
    assert ds.images.shape == (60, 8, 8, 1) and ds.class_names == [str(c) for c in range(10)]
    first = sorted((tmp_path / "digits" / "0").iterdir())[0]  # files are read in name order
    assert np.array_equal(ds.images[0, ..., 0], to_uint8(x)[int(first.stem)]) and ds.labels[0] == 0
    assert not has_test_split(root)
    with pytest.raises(LabelStoreError, match="no test split"):
        open_dataset(root, "test")
    # a colour image among them makes the folder RGB, as before
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "digits" / "0" / "rgb.png")
    assert open_dataset(root).in_channels == 3


def test_split_folders_and_npz_test_sets(tmp_path):
    x, y = make_digits(8)
    u = to_uint8(x)
    export_pngs(tmp_path / "d" / "train", u[:60], y[:60])
    export_pngs(tmp_path / "d" / "test", u[60:], y[60:])
    root = str(tmp_path / "d")
    assert has_test_split(root)
    train, test = open_dataset(root, "train"), open_dataset(root, "test")
    assert len(train) == 60 and len(test) == 20 and train.in_channels == test.in_channels == 1
    assert test.name == "d/test"
    npz = export_npz(tmp_path / "held.npz", u[60:], y[60:])
    assert len(open_test_set(npz)) == 20  # an .npz given as a test set is the test set
    with pytest.raises(LabelStoreError, match="no test split"):
        open_dataset(npz, "test")


def test_sixteen_bit_pngs_are_refused_not_clipped(tmp_path):
    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "f" / "a" / "0.png")
    with pytest.raises(LabelStoreError, match="more than 8 bits.*0..255"):
        open_dataset(str(tmp_path / "f"))


def test_holdout_is_class_balanced_disjoint_and_repeatable():
    _, y = make_digits(30)
    tr, val = holdout_split(y, 0.1, seed=3)
    assert np.array_equal(np.bincount(y[val]), np.full(10, 3))
    assert not set(tr) & set(val) and len(tr) + len(val) == len(y)
    tr2, val2 = holdout_split(y, 0.1, seed=3)
    assert np.array_equal(val, val2) and not np.array_equal(val, holdout_split(y, 0.1, seed=4)[1])
    with pytest.raises(LabelStoreError, match="two per class"):
        holdout_split(np.arange(10), 0.1, 0)


def test_a_test_set_must_fit_the_training_data(tmp_path):
    x, y = make_digits(4)
    train = ImageDataset(to_uint8(x), y, 10, "digits", [str(c) for c in range(10)])
    rec = data_record(str(tmp_path / "digits.npz"), train, evaluated_on="validation")
    check_fits_record(rec, ImageDataset(to_uint8(x), y, 10, "same"), "the test set")  # no names: shape decides
    with pytest.raises(LabelStoreError, match=r"3-channel 8x8 .* 1-channel 8x8"):
        check_fits_record(rec, ImageDataset(np.repeat(to_uint8(x)[..., None], 3, -1), y, 10, "rgb"), "the test set")
    big = np.zeros((40, 16, 16), np.uint8)
    with pytest.raises(LabelStoreError, match=r"16x16 images .* 8x8 images"):
        check_fits_record(rec, ImageDataset(big, y, 10, "big"), "the test set")
    names = [f"class{c}" for c in range(10)]
    with pytest.raises(LabelStoreError, match="would not mean the same"):
        check_fits_record(rec, ImageDataset(to_uint8(x), y, 10, "renamed", names), "the test set")
    with pytest.raises(LabelStoreError, match="of 12 classes, but the training data digits had .* of 10 classes"):
        check_fits_record(rec, ImageDataset(to_uint8(x), y, 12, "twelve"), "the test set")
