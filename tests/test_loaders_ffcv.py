"""FFCV half of the loaders: beton writing, the replay decoder, exact replay, the twin agreement.

Real FFCV, real photos (scikit-image), real files. Expensive pieces (betons, compiled
Loaders) are module-scoped: numba compiles one Loader per backend and (size, batch size).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip("ffcv")
cv2 = pytest.importorskip("cv2")

from benchmarks._images import fixed_images, variable_images  # noqa: E402
from labelstore import CropPolicy, LabelStoreError, LabelWriter, MixPolicy, draw_crops, image_set_fingerprint  # noqa: E402
from loaders import ReplayLoader, TorchBackend, record_labels  # noqa: E402
from loaders.backend import CropBatch
from loaders.beton import open_beton, sidecar_paths, write_beton  # noqa: E402
from loaders.ffcv_backend import FFCVBackend, plan_segments  # noqa: E402
from loaders._ffcv_ops import _NUMBA_CONST_LIMIT, ParamTable  # noqa: E402

SIZE = (32, 32)
BS = 16
# FFCV resizes with OpenCV INTER_AREA, the twin with torchvision bilinear + antialias:
# measured mean |diff| 1.2 levels over a batch, worst image 5.8 (docs/ffcv-backend.md).
TWIN_MEAN_TOL = 2.0
TWIN_IMAGE_MEAN_TOL = 8.0


def reference(image: np.ndarray, box, flip: bool, size=SIZE) -> np.ndarray:
    """The documented pixel semantics, with OpenCV's INTER_AREA (what FFCV's resize_crop runs)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, 2)
    t, l, h, w = (int(v) for v in box)
    out = cv2.resize(np.ascontiguousarray(image[t : t + h, l : l + w]), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return out[:, ::-1] if flip else out


def random_batches(rng, sizes, id_lists):
    out = []
    for ids in id_lists:
        ids = np.asarray(ids, np.int64)
        H, W = sizes[ids, 0], sizes[ids, 1]
        h, w = rng.integers(1, H + 1), rng.integers(1, W + 1)
        top, left = rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)
        out.append(CropBatch(ids, np.stack([top, left, h, w], 1).astype(np.int32), rng.random(len(ids)) < 0.5))
    return out


def policy_batches(sizes, epoch, n, bs=BS, seed=5, size=SIZE):
    order = np.random.default_rng(seed + epoch).permutation(n)
    out = []
    for s in range(0, n, bs):
        idx = order[s : s + bs]
        boxes, flips = draw_crops(CropPolicy(size=size), seed, epoch, idx, sizes[idx])
        out.append(CropBatch(idx, boxes, flips))
    return out


def hashes(tensors) -> list[str]:
    return [hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest() for t in tensors]


def to_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


# -- module fixtures: image sets and betons --------------------------------------------------
@pytest.fixture(scope="module")
def fixed():
    return fixed_images(40, size=48, seed=11)


@pytest.fixture(scope="module")
def variable():
    return variable_images(40, min_side=24, max_side=72, seed=12)


@pytest.fixture(scope="module")
def fixed_beton(tmp_path_factory, fixed):
    path = tmp_path_factory.mktemp("b") / "fixed.beton"
    write_beton(fixed, path, labels=np.arange(len(fixed)) % 10, progress=False)
    return path


@pytest.fixture(scope="module")
def variable_beton(tmp_path_factory, variable):
    path = tmp_path_factory.mktemp("b") / "variable.beton"
    write_beton(variable, path, labels=np.arange(len(variable)) % 10, progress=False)
    return path


@pytest.fixture(scope="module")
def fixed_backend(fixed_beton):
    return FFCVBackend(fixed_beton, num_workers=2, copy=True)


@pytest.fixture(scope="module")
def variable_backend(variable_beton):
    return FFCVBackend(variable_beton, num_workers=2, copy=True)


# -- write_beton / open_beton -----------------------------------------------------------------
def test_beton_records_fingerprint_sizes_labels(fixed_beton, fixed):
    info = open_beton(fixed_beton)
    assert info.num_images == 40 and info.write_mode == "raw" and info.lossless
    assert info.fingerprint == image_set_fingerprint(fixed)
    assert np.array_equal(info.image_sizes, np.tile([48, 48], (40, 1)))
    assert np.array_equal(info.labels, np.arange(40) % 10) and info.num_classes == 10
    meta = json.loads(sidecar_paths(fixed_beton)[0].read_text())
    assert meta["image_fingerprint"] == info.fingerprint and meta["beton_bytes"] == fixed_beton.stat().st_size


def test_variable_beton_sizes_and_fingerprint(variable_beton, variable):
    info = open_beton(variable_beton)
    assert np.array_equal(info.image_sizes, [im.shape[:2] for im in variable])
    assert info.fingerprint == image_set_fingerprint(variable)


def test_gray_folder_dataset_and_jpeg_inputs(tmp_path, fixed):
    from PIL import Image

    gray = fixed[:6, :, :, 0].copy()  # (N, H, W): fingerprinted as given, stored as RGB
    info = write_beton(gray, tmp_path / "gray.beton", progress=False)
    assert info.fingerprint == image_set_fingerprint(gray) and info.channels == 1 and info.labels is None
    be = FFCVBackend(tmp_path / "gray.beton", num_workers=1, copy=True)
    full = [CropBatch(np.arange(6), np.tile([0, 0, 48, 48], (6, 1)).astype(np.int32), np.zeros(6, bool))]
    (out,) = be.iter_batches(full, (48, 48))
    assert np.array_equal(out.permute(0, 2, 3, 1).numpy(), np.repeat(gray[..., None], 3, 3))  # raw is lossless

    for c in range(2):
        (tmp_path / "folder" / f"c{c}").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(fixed[i]).save(tmp_path / "folder" / f"c{i % 2}" / f"{i}.png")
    info = write_beton(tmp_path / "folder", tmp_path / "folder.beton", progress=False)
    assert list(info.labels) == [0, 0, 1, 1] and info.fingerprint == image_set_fingerprint(fixed[[0, 2, 1, 3]])

    dataset = [(fixed[i], i % 3) for i in range(5)]

    class DS:
        def __len__(self):
            return len(dataset)

        def __getitem__(self, i):
            return dataset[i]

    info = write_beton(DS(), tmp_path / "ds.jpg.beton", write_mode="jpg", jpeg_quality=85, progress=False)
    assert list(info.labels) == [0, 1, 2, 0, 1] and info.write_mode == "jpg" and not info.lossless
    assert info.fingerprint == image_set_fingerprint(fixed[:5])  # of the source pixels, not the decoded JPEG


def test_missing_and_damaged_beton(tmp_path, fixed_beton):
    with pytest.raises(LabelStoreError, match="no .beton at .*write_beton"):
        open_beton(tmp_path / "nope.beton")
    with pytest.raises(LabelStoreError, match="no .beton"):
        FFCVBackend(tmp_path / "nope.beton")
    bad = tmp_path / "bad.beton"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(LabelStoreError, match="not a readable FFCV .beton"):
        open_beton(bad)
    # a beton replaced under its sidecar is detected
    copy = tmp_path / "copy.beton"
    copy.write_bytes(fixed_beton.read_bytes() + b"\x00" * 7)
    for p_src, p_dst in zip(sidecar_paths(fixed_beton), sidecar_paths(copy)):
        p_dst.write_bytes(p_src.read_bytes())
    with pytest.raises(LabelStoreError, match="does not describe"):
        open_beton(copy)
    with pytest.raises(LabelStoreError, match="write_mode"):
        write_beton(np.zeros((2, 8, 8, 3), np.uint8), tmp_path / "x.beton", write_mode="png")
    with pytest.raises(LabelStoreError, match="uint8"):
        write_beton(np.zeros((2, 8, 8, 3), np.float32), tmp_path / "x.beton")


# -- the replay decoder ---------------------------------------------------------------------
def test_param_table_is_referenced_not_frozen(fixed_backend, fixed):
    """numba copies contiguous global arrays <= 1 MB; the table must be larger, and updates must show."""
    assert ParamTable(10).array.nbytes > _NUMBA_CONST_LIMIT
    rng = np.random.default_rng(0)
    ids = [np.arange(16)]
    first = random_batches(rng, fixed_backend.image_sizes, ids)
    second = random_batches(rng, fixed_backend.image_sizes, ids)  # same ids, other boxes
    (a,) = fixed_backend.iter_batches(first, SIZE)
    loader = fixed_backend._loader(*SIZE, 16)[0]
    (b,) = fixed_backend.iter_batches(second, SIZE)
    assert fixed_backend._loader(*SIZE, 16)[0] is loader  # one compiled Loader, new parameters
    for out, cb in ((a, first[0]), (b, second[0])):
        for i in range(16):
            assert np.array_equal(to_hwc(out[i]), reference(fixed[cb.indices[i]], cb.boxes[i], cb.flips[i]))
    assert not torch.equal(a, b)


def test_crops_match_reference_with_duplicates_short_and_empty_batches(fixed_backend, fixed):
    """Label pools reuse images: reuses within a pass read their own parameter rows (layers)."""
    rng = np.random.default_rng(1)
    perm = rng.permutation(40)
    ids = [perm[:16], perm[16:32], perm[32:40],  # a short batch ends a pass
           perm[:16],  # ids reused (a label pool): a new pass
           np.array([3, 4, 3, 5, 3, 6]),  # one image three times inside one batch
           np.array([], np.int64), perm[16:32]]
    batches = random_batches(rng, fixed_backend.image_sizes, ids)
    one = plan_segments(batches, BS, 40, layers=1)  # every reuse of an image starts a pass
    assert [len(s) for s in one] == [3, 1, 1, 1, 1, 1]  # [16,16,8] | [16] | rounds [3,4,5,6],[3],[3] | [16]
    segs = plan_segments(batches, BS, 40, layers=fixed_backend.layers)
    assert fixed_backend.layers >= 3
    assert [len(s) for s in segs] == [3, 2, 1]  # [16,16,8] | [16],[3,4,3,5,3,6] (3 layers) | [16]
    vids = np.concatenate([p.vids for p in segs[1]])
    assert len(set(vids.tolist())) == len(vids) and vids.max() >= 2 * 40  # the third use of image 3 is layer 2
    passes = fixed_backend.passes
    outs = list(fixed_backend.iter_batches(batches, SIZE))
    assert fixed_backend.passes - passes == len(segs)
    assert [len(o) for o in outs] == [len(i) for i in ids]
    for cb, out in zip(batches, outs):
        for i in range(len(cb)):
            assert np.array_equal(to_hwc(out[i]), reference(fixed[cb.indices[i]], cb.boxes[i], cb.flips[i]))


def test_variable_resolution_crops_match_reference(variable_backend, variable):
    batches = policy_batches(variable_backend.image_sizes, 0, 40)
    for cb, out in zip(batches, variable_backend.iter_batches(batches, SIZE)):
        assert out.shape == (len(cb), 3, *SIZE) and out.dtype == torch.uint8
        for i in range(len(cb)):
            assert np.array_equal(to_hwc(out[i]), reference(variable[cb.indices[i]], cb.boxes[i], cb.flips[i]))


def test_bad_crop_records(fixed_backend):
    with pytest.raises(LabelStoreError, match="outside"):
        list(fixed_backend.iter_batches([CropBatch(np.array([0]), np.array([[40, 0, 9, 9]], np.int32), np.zeros(1, bool))], SIZE))
    with pytest.raises(LabelStoreError, match="names image 40"):
        list(fixed_backend.iter_batches([CropBatch(np.array([40]), np.array([[0, 0, 9, 9]], np.int32), np.zeros(1, bool))], SIZE))


# -- exact replay: two independent passes ----------------------------------------------------
@pytest.mark.parametrize("which", ["fixed", "variable"])
def test_record_vs_replay_pixel_hashes(which, fixed_beton, variable_beton, fixed_backend, variable_backend):
    beton, first = (fixed_beton, fixed_backend) if which == "fixed" else (variable_beton, variable_backend)
    batches = [cb for e in range(2) for cb in policy_batches(first.image_sizes, e, 40)]
    recorded = hashes(first.iter_batches(batches, SIZE))
    replay = FFCVBackend(beton, num_workers=2)  # a fresh Loader and compilation, no copies
    assert hashes(replay.iter_batches(batches, SIZE)) == recorded
    assert len(set(recorded)) == len(recorded)


def test_twin_agreement_within_interpolation_tolerance(variable_backend, variable):
    batches = policy_batches(variable_backend.image_sizes, 3, 40)
    ffcv = torch.cat(list(variable_backend.iter_batches(batches, SIZE))).int()
    twin = torch.cat(list(TorchBackend(variable).iter_batches(batches, SIZE))).int()
    diff = (ffcv - twin).abs().float()
    assert diff.mean() <= TWIN_MEAN_TOL, diff.mean()
    assert diff.mean((1, 2, 3)).max() <= TWIN_IMAGE_MEAN_TOL
    # the same crops of the same images: pixel-wise strongly correlated
    assert np.corrcoef(ffcv.flatten().numpy(), twin.flatten().numpy())[0, 1] > 0.98


# -- the whole path: record_labels and ReplayLoader through FFCVBackend -----------------------
def test_record_labels_then_replay_loader_sees_the_same_pixels(tmp_path, variable_beton, variable_backend):
    seen: dict[str, np.ndarray] = {}

    def teacher(x: torch.Tensor) -> torch.Tensor:
        """A deterministic 'teacher': logits from the pixels; remembers each image's hash."""
        flat = x.reshape(len(x), -1).double()
        logits = torch.stack([flat[:, i::10].mean(1) for i in range(10)], 1).float() * 10
        for img, z in zip(x, logits):
            seen[hashlib.sha256(img.numpy().tobytes()).hexdigest()] = z.numpy()
        return logits

    path = tmp_path / "labels.h5"
    with LabelWriter(path, num_classes=10, num_images=40, seed=3, image_fingerprint=variable_backend.fingerprint,
                     image_sizes=variable_backend.image_sizes, crop_policy=CropPolicy(size=SIZE),
                     mix_policy=MixPolicy("cutmix")) as w:
        record_labels(w, variable_backend, teacher, epochs=2, batch_size=BS, progress=False)
    assert len(seen) == 2 * 40

    loader = ReplayLoader(path, FFCVBackend(variable_beton, num_workers=2), "soft", epochs=2)
    steps = 0
    for epoch in range(2):
        loader.set_epoch(epoch)
        for step in loader:
            for img, z in zip(step.images, step.logits):
                key = hashlib.sha256(img.numpy().tobytes()).hexdigest()
                assert key in seen, "the student saw pixels the teacher never labelled"
                np.testing.assert_allclose(z.numpy(), seen[key], rtol=1e-2, atol=1e-2)  # dense16 codec
            steps += 1
    assert steps == 2 * 3


def test_interleaved_generators_are_refused(fixed_backend):
    batches = policy_batches(fixed_backend.image_sizes, 7, 40)
    g1 = fixed_backend.iter_batches(batches, SIZE)
    next(g1)
    g2 = fixed_backend.iter_batches(batches, SIZE)
    assert len(next(g2)) == BS  # the newer pass owns the table
    with pytest.raises(LabelStoreError, match="interleaved"):
        next(g1)
    g2.close()


def test_max_resolution_and_foreign_beton(tmp_path, fixed):
    info = write_beton(fixed[:4], tmp_path / "small.beton", max_resolution=24, progress=False)
    shrunk = [cv2.resize(im, (24, 24), interpolation=cv2.INTER_AREA) for im in fixed[:4]]
    assert np.array_equal(info.image_sizes, np.tile([24, 24], (4, 1)))
    assert info.fingerprint == image_set_fingerprint(shrunk)  # of the pixels the loader crops
    for p in sidecar_paths(tmp_path / "small.beton"):  # as if FFCV had written it directly
        p.unlink()
    foreign = open_beton(tmp_path / "small.beton")
    assert foreign.fingerprint is None and foreign.write_mode == "raw"
    assert np.array_equal(foreign.image_sizes, info.image_sizes)


def test_jpeg_beton_replays_exactly_and_is_close_to_the_source(tmp_path, fixed):
    path = tmp_path / "q.beton"
    write_beton(fixed[:20], path, write_mode="jpg", jpeg_quality=90, progress=False)
    sizes = np.tile([48, 48], (20, 1))
    batches = policy_batches(sizes, 0, 20, bs=10)
    first = list(FFCVBackend(path, num_workers=2, copy=True).iter_batches(batches, SIZE))
    assert hashes(FFCVBackend(path, num_workers=2).iter_batches(batches, SIZE)) == hashes(first)
    ref = np.stack([reference(fixed[i], b, f) for cb in batches for i, b, f in zip(cb.indices, cb.boxes, cb.flips)])
    got = torch.cat(first).permute(0, 2, 3, 1).numpy().astype(int)
    assert 0 < np.abs(got - ref).mean() < 4  # lossy, but close (q90)


def test_one_layer_backend_and_alternating_stored_epochs(fixed_beton, fixed):
    """Batches of different stored epochs overlap in images: layers keep them in one pass."""
    sizes = np.tile([48, 48], (40, 1))
    batches = [cb for pair in zip(policy_batches(sizes, 1, 40, bs=20), policy_batches(sizes, 2, 40, bs=20)) for cb in pair]
    outs = {}
    for layers in (1, 4):
        be = FFCVBackend(fixed_beton, num_workers=2, copy=True, layers=layers)
        outs[layers] = list(be.iter_batches(batches, SIZE))
        assert be.passes == (1 if layers == 4 else len(plan_segments(batches, 20, 40, 1))) and (layers == 4 or be.passes > 1)
    assert hashes(outs[1]) == hashes(outs[4])
    for cb, out in zip(batches, outs[4]):
        for i in range(len(cb)):
            assert np.array_equal(to_hwc(out[i]), reference(fixed[cb.indices[i]], cb.boxes[i], cb.flips[i]))


def test_a_lone_short_batch_reuses_the_compiled_loader(fixed_backend, fixed):
    list(fixed_backend.iter_batches(policy_batches(fixed_backend.image_sizes, 8, 40), SIZE))  # compiles bs 16
    compiled = set(fixed_backend._loaders)
    (cb,) = random_batches(np.random.default_rng(9), fixed_backend.image_sizes, [np.arange(5)])
    (out,) = fixed_backend.iter_batches([cb], SIZE)
    assert set(fixed_backend._loaders) == compiled
    for i in range(5):
        assert np.array_equal(to_hwc(out[i]), reference(fixed[cb.indices[i]], cb.boxes[i], cb.flips[i]))
