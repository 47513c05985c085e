"""Write the golden label files of one format version (numcodecs keeps fixtures the same way).

Each release must still read every file under ``tests/golden/files/v<N>/`` to exactly the
values in its ``<name>.expected.npz`` / ``<name>.expected.json`` (``tests/test_golden_files.py``).
Generate a set once, with the release that writes that format version, and never regenerate
an old one::

    git worktree add /tmp/v1tree 60d5261          # the last release writing format v1
    cd /tmp/v1tree && LABELSTORE_GOLDEN_ROOT=/tmp/v1tree PYTHONPATH=/tmp/v1tree \\
        /work/main/.venv/bin/python /work/main/tests/golden/make_golden_files.py \\
        --out /work/main/tests/golden/files/v1

    git worktree add /tmp/v2tree c5a2299          # "Format 2": partial epochs, pixels, HDF5 1.10 objects
    cd /tmp/v2tree && LABELSTORE_GOLDEN_ROOT=/tmp/v2tree PYTHONPATH=/tmp/v2tree \\
        /work/main/.venv/bin/python /work/main/tests/golden/make_golden_files.py \\
        --out /work/main/tests/golden/files/v2

The folder's name says the format version (``v<N>``): the set is the cases whose ``formats``
include N (format 1's are ``CASES``; format 2's, ``CASES_V2``, add partial epochs and the
``pixels`` attribute and cover every codec and mode again in HDF5 1.10 objects), and every
file written must carry that version.

The cases below use only the public API (``LabelWriter``, ``LabelFile``, policies, codecs).
Together they cover every codec and configuration, every crop / order / mix mode, both
sources, with and without fingerprint, image sizes, teacher and user attributes, and
several batch sizes. The expected values are what the generating release reads back, and
before anything is written they are checked against the inputs: exactly for orders,
indices, boxes, flips and mixing (derived ones against an independent re-implementation of
docs/format.md's draws), within each codec's documented error for the logits.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

import labelstore
from labelstore import (
    CropPolicy, LabelFile, LabelWriter, Mix, MixPolicy, image_set_fingerprint, logits_from_probs,
    parse_codec_spec, verify_file,
)

RRC = "random_resized_crop"

# One dict per file. Keys: codec spec, N images, C classes, seed, batch sizes (one per
# epoch), sizes ("fixed", "variable", "wide", or None = no /image_sizes), crops / orders /
# mix modes, crop and mix policies, source temperature (None = logits), fingerprint,
# teacher, attrs; since format 2 optionally ``partial`` ({epoch: the batches it stores}) and
# ``pixels`` (the dict passed to LabelWriter(pixels=...)); ``formats``: the golden sets the
# case belongs to (default: format 1's).
CASES: list[dict] = [
    dict(name="dense16_rrc_cutmix", codec="dense16", N=20, C=10, seed=11, batch_sizes=[8, 6, 20],
         sizes="fixed", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(24, 24), kind=RRC), mix_policy=dict(kind="cutmix", alpha=1.0, prob=0.6),
         source_T=None, fingerprint=True,
         teacher={"name": "resnet18", "weights": "torchvision:IMAGENET1K_V1", "bn": "eval"},
         attrs={"dataset": "golden-v1", "ipc": 2, "note": "ünïcode ok"}),
    dict(name="dense_q8_imported_cutmix", codec="dense_q:bits=8", N=16, C=6, seed=22, batch_sizes=[5, 7],
         sizes=None, crops="explicit", orders="explicit", mix="explicit",
         crop_policy=dict(size=(32, 32), kind=RRC), mix_policy=dict(kind="cutmix", alpha=1.0, prob=1.0),
         source_T=3.0, fingerprint=False, teacher=None, attrs=None),
    dict(name="dense_q6_full_mixup", codec="dense_q:bits=6", N=24, C=8, seed=33, batch_sizes=[10, 10, 7],
         sizes="variable", crops="derived", orders="explicit", mix="derived",
         crop_policy=dict(size=(20, 20), kind="full"), mix_policy=dict(kind="mixup", alpha=0.4, prob=1.0),
         source_T=None, fingerprint=True, teacher={"committee": ["a", "b"], "weights": [0.7, 0.3]},
         attrs={"stage": "relabel"}),
    dict(name="dense_q4_explicit_mixup", codec="dense_q:bits=4", N=13, C=5, seed=44, batch_sizes=[4],
         sizes="variable", crops="explicit", orders="derived", mix="explicit",
         crop_policy=dict(size=(16, 16), scale=(0.25, 1.0), ratio=(0.5, 2.0), flip_prob=0.3, kind=RRC),
         mix_policy=dict(kind="mixup", alpha=0.8, prob=0.7),
         source_T=1.5, fingerprint=True, teacher="a plain string teacher", attrs={"list": [1, 2, 3]}),
    dict(name="topk_k3_variable_sizes", codec="topk:k=3", N=30, C=10, seed=55, batch_sizes=[16, 9],
         sizes="variable", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(24, 24), scale=(0.08, 1.0), flip_prob=0.5, kind=RRC),
         mix_policy=dict(kind="none"),
         source_T=None, fingerprint=True, teacher={"name": "convnet"}, attrs=None),
    dict(name="topk_k4_tail0_wide_boxes", codec="topk:k=4,tail_temperature=0,step=0.0625", N=12, C=7, seed=66,
         batch_sizes=[5, 12, 3], sizes="wide", crops="explicit", orders="explicit", mix="derived",
         crop_policy=dict(size=(64, 64), kind=RRC), mix_policy=dict(kind="none"),
         source_T=2.0, fingerprint=False, teacher=None, attrs={"imported_from": "fkd"}),
    dict(name="topk_k_all_rect_cutmix", codec="topk:k=12", N=14, C=6, seed=77, batch_sizes=[7],
         sizes="fixed", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(16, 12), scale=(0.3, 0.9), ratio=(0.6, 1.6), flip_prob=0.5, kind=RRC),
         mix_policy=dict(kind="cutmix", alpha=2.0, prob=1.0),
         source_T=None, fingerprint=True, teacher={"name": "t"}, attrs={"k": "all classes"}),
    dict(name="lowrank_r3_k1_mixup", codec="lowrank:rank=3,k=1", N=32, C=9, seed=88, batch_sizes=[12, 8],
         sizes="fixed", crops="derived", orders="explicit", mix="derived",
         crop_policy=dict(size=(28, 28), kind=RRC), mix_policy=dict(kind="mixup", alpha=1.0, prob=0.5),
         source_T=None, fingerprint=True, teacher={"name": "efficientnet-lite0"}, attrs={"fit": "own sample"}),
    dict(name="lowrank_r4_k2_explicit_full", codec="lowrank:rank=4,k=2,step=0.25", N=18, C=8, seed=99,
         batch_sizes=[6, 18], sizes="variable", crops="explicit", orders="derived", mix="explicit",
         crop_policy=dict(size=(20, 20), kind="full"), mix_policy=dict(kind="cutmix", alpha=1.0, prob=0.5),
         source_T=4.0, fingerprint=False, teacher={"name": "probs-only teacher"}, attrs=None),
    dict(name="lowrank_r2_k0_full", codec="lowrank:rank=2,k=0", N=15, C=4, seed=111, batch_sizes=[4, 4],
         sizes="fixed", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(12, 12), kind="full"), mix_policy=dict(kind="none"),
         source_T=None, fingerprint=False, teacher=None, attrs=None),
]

_TORCH_PIXELS = {"crop_size": [24, 24], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "gray": False,
                 "dtype": "float32", "backend": "torch", "interpolation": "bilinear, antialiased (torchvision v2 resize)"}
# Format 2: every codec, crop / order / mix mode and source again (the HDF5 objects are 1.10's
# now), plus partial epochs -- a prefix (LPLD's pool), a gap, only the short last batch -- and
# the pixels attribute, set and unset.
CASES_V2: list[dict] = [
    dict(name="v2_dense16_lpld_pool_pixels", codec="dense16", N=20, C=10, seed=121, batch_sizes=[8, 8, 8],
         partial={2: [0, 1]}, pixels=_TORCH_PIXELS,
         sizes="fixed", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(24, 24), kind=RRC), mix_policy=dict(kind="cutmix", alpha=1.0, prob=0.6),
         source_T=None, fingerprint=True, teacher={"name": "resnet18", "bn": "train"},
         attrs={"dataset": "golden-v2", "pool": "LPLD, first 7 of 9 batches", "note": "ünïcode ok"}),
    dict(name="v2_dense_q8_imported_gap_mixup", codec="dense_q:bits=8", N=14, C=6, seed=132, batch_sizes=[4, 5],
         partial={0: [1, 3]}, pixels=None,
         sizes=None, crops="explicit", orders="explicit", mix="explicit",
         crop_policy=dict(size=(32, 32), kind=RRC), mix_policy=dict(kind="mixup", alpha=0.8, prob=0.7),
         source_T=2.0, fingerprint=False, teacher=None, attrs=None),
    dict(name="v2_topk_k3_full_mixup_gray_pixels", codec="topk:k=3", N=16, C=8, seed=143, batch_sizes=[6, 16],
         pixels={"crop_size": [20, 20], "mean": [0.5], "std": [0.25], "gray": True, "dtype": "float16",
                 "backend": "ffcv", "interpolation": "area"},
         sizes="variable", crops="derived", orders="explicit", mix="derived",
         crop_policy=dict(size=(20, 20), kind="full"), mix_policy=dict(kind="mixup", alpha=0.4, prob=1.0),
         source_T=None, fingerprint=True, teacher={"committee": ["a", "b"], "weights": [0.7, 0.3]},
         attrs={"stage": "relabel"}),
    dict(name="v2_lowrank_r3_k2_explicit_cutmix_last_batch", codec="lowrank:rank=3,k=2", N=18, C=9, seed=154,
         batch_sizes=[7, 6], partial={0: [2]},
         sizes="variable", crops="explicit", orders="derived", mix="explicit",
         crop_policy=dict(size=(20, 20), kind="full"), mix_policy=dict(kind="cutmix", alpha=1.0, prob=0.5),
         source_T=4.0, fingerprint=False, teacher={"name": "probs-only teacher"}, attrs=None),
    dict(name="v2_dense_q4_rrc_nomix", codec="dense_q:bits=4", N=11, C=5, seed=165, batch_sizes=[3, 11],
         pixels=_TORCH_PIXELS,
         sizes="variable", crops="derived", orders="derived", mix="derived",
         crop_policy=dict(size=(16, 16), scale=(0.25, 1.0), ratio=(0.5, 2.0), flip_prob=0.3, kind=RRC),
         mix_policy=dict(kind="none"),
         source_T=None, fingerprint=True, teacher="a plain string teacher", attrs={"list": [1, 2, 3]}),
]
for _case in CASES_V2:
    _case["formats"] = (2,)


def cases_for(version: int) -> list[dict]:
    """The golden set of one format version."""
    return [c for c in CASES + CASES_V2 if version in c.get("formats", (1,))]


def stored_batches(case: dict, epoch: int) -> list[int]:
    """The batches a case stores of ``epoch``: all, unless the epoch is partial."""
    nb = -(-case["N"] // case["batch_sizes"][epoch])
    return list(case.get("partial", {}).get(epoch, range(nb)))


# -- an independent re-implementation of docs/format.md's derived draws ---------------------
_M64 = (1 << 64) - 1


def _splitmix(z: int) -> int:
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & _M64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def spec_hash(*key: int) -> int:
    h = 0
    for w in key:
        h = _splitmix((h + 0x9E3779B97F4A7C15 + int(w)) & _M64)
    return h


def spec_uniform(*key: int) -> float:
    return (spec_hash(*key) >> 11) * 2.0 ** -53


def spec_order(seed: int, epoch: int, n: int) -> np.ndarray:
    keys = [spec_hash(seed, epoch, 1, i) for i in range(n)]
    return np.array(sorted(range(n), key=lambda i: keys[i]), np.int64)  # sorted() is stable


def spec_crop(p: dict, seed: int, epoch: int, i: int, H: int, W: int) -> tuple[list[int], bool]:
    if p["kind"] == "full":
        return [0, 0, H, W], False
    u = [spec_uniform(seed, epoch, 2, i, j) for j in range(23)]
    (lo, hi), (r0, r1) = p["scale"], p["ratio"]
    for a in range(10):
        target = H * W * (lo + (hi - lo) * u[2 * a])
        aspect = math.exp(math.log(r0) + (math.log(r1) - math.log(r0)) * u[2 * a + 1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= W and 0 < h <= H:
            return [math.floor(u[20] * (H - h + 1)), math.floor(u[21] * (W - w + 1)), h, w], u[22] < p["flip_prob"]
    ratio = W / H  # centre crop, aspect ratio clamped (torchvision's fallback)
    if ratio < r0:
        w, h = W, round(W / r0)
    elif ratio > r1:
        h, w = H, round(H * r1)
    else:
        h, w = H, W
    h, w = min(h, H), min(w, W)
    return [(H - h) // 2, (W - w) // 2, h, w], u[22] < p["flip_prob"]


def spec_mix(mp: dict, size, seed: int, epoch: int, batch: int, n: int):
    if mp["kind"] == "none":
        return None
    g = np.random.default_rng(spec_hash(seed, epoch, 3, batch))
    if g.random() >= mp["prob"]:
        return None
    partner = g.permutation(n)
    lam = g.beta(mp["alpha"], mp["alpha"])
    if mp["kind"] == "mixup":
        return "mixup", partner, float(np.float32(lam)), [0, 0, 0, 0]
    H, W = size
    cut = math.sqrt(1 - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = int(g.integers(H)), int(g.integers(W))
    y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, H), max(cx - cw // 2, 0), min(cx + cw // 2, W)
    return "cutmix", partner, float(np.float32(1 - (y1 - y0) * (x1 - x0) / (H * W))), [y0, x0, y1, x1]


# -- inputs ---------------------------------------------------------------------------------
def teacher_logits(rng: np.random.Generator, protos: np.ndarray, n: int) -> np.ndarray:
    """Teacher-like logits: a class prototype (structure a low-rank basis can find) plus noise."""
    y = rng.integers(0, len(protos), n)
    z = protos[y] + rng.normal(0, 0.7, (n, protos.shape[1]))
    z[np.arange(n), y] += 4.0
    return z.astype(np.float32)


def image_sizes(kind, n: int, rng: np.random.Generator):
    if kind is None:
        return None
    if kind == "fixed":
        return np.tile([[32, 40]], (n, 1))
    sizes = np.stack([rng.integers(8, 64, n), rng.integers(8, 64, n)], 1)
    sizes[0], sizes[1] = (3, 60), (60, 4)  # extreme aspect ratios: random-resized crops fall back to the centre
    if kind == "wide":
        sizes[2], sizes[3] = (5, 70000), (66000, 2)  # boxes over 65535: the 4-byte crop layout
    return sizes


def softmax(z: np.ndarray, T: float) -> np.ndarray:
    z = z.astype(np.float64) / T
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def write_case(case: dict, path: Path) -> dict:
    """Write one label file; returns what was given to the writer, keyed by (epoch, batch)."""
    rng = np.random.default_rng(case["seed"] + 1000)
    N, C = case["N"], case["C"]
    protos = rng.normal(0, 2.0, (C, C))
    codec = parse_codec_spec(case["codec"], C)
    if codec.needs_fit:
        codec.fit(teacher_logits(rng, protos, 200))
    sizes = image_sizes(case["sizes"], N, rng)
    fingerprint = None
    if case["fingerprint"]:
        fingerprint = image_set_fingerprint(rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in sizes)
    box_sizes = sizes if sizes is not None else np.tile([[40, 50]], (N, 1))  # an imported file's unknown sizes
    crop_policy = CropPolicy(**case["crop_policy"])
    mix_policy = MixPolicy(**case["mix_policy"])
    T = case["source_T"]
    given: dict = {"orders": {}, "batches": {}, "codec": codec, "image_sizes": sizes, "fingerprint": fingerprint}
    new = {"pixels": case["pixels"]} if case.get("pixels") else {}  # format 2's; format 1's writer has no such argument
    with LabelWriter(
        path, num_classes=C, num_images=N, codec=codec, seed=case["seed"], image_fingerprint=fingerprint,
        image_sizes=sizes, crop_policy=crop_policy, mix_policy=mix_policy, crops=case["crops"],
        orders=case["orders"], mix=case["mix"], source="probabilities" if T else "logits",
        source_temperature=T, teacher=case["teacher"], attrs=case["attrs"], overwrite=True, **new,
    ) as w:
        for e, bs in enumerate(case["batch_sizes"]):
            order = rng.permutation(N) if case["orders"] == "explicit" else None
            partial = {"batches": case["partial"][e]} if e in case.get("partial", {}) else {}
            given["orders"][e] = w.begin_epoch(e, bs, order, **partial)
            if order is not None:
                assert np.array_equal(given["orders"][e], order)
            assert w.num_batches(e) == -(-N // bs)
            for b in stored_batches(case, e):
                idx = w.batch_indices(e, b)
                n = len(idx)
                z = teacher_logits(rng, protos, n)
                logits = z
                if T:  # an import from probabilities: T * log p, equal to z up to a per-record shift
                    logits = logits_from_probs(softmax(z, T), T)
                    d = (logits - logits.mean(1, keepdims=True)) - (z - z.mean(1, keepdims=True))
                    assert np.abs(d).max() < 1e-3, "logits_from_probs lost more than float rounding"
                kw: dict = {}
                if case["crops"] == "explicit":
                    H, W = box_sizes[idx, 0], box_sizes[idx, 1]
                    if crop_policy.kind == "full":
                        boxes, flips = np.stack([0 * H, 0 * W, H, W], 1), np.zeros(n, bool)
                    else:
                        h, wd = rng.integers(1, H + 1), rng.integers(1, W + 1)
                        boxes = np.stack([rng.integers(0, H - h + 1), rng.integers(0, W - wd + 1), h, wd], 1)
                        flips = rng.random(n) < crop_policy.flip_prob
                        big = (H > 0xFFFF) | (W > 0xFFFF)  # whole-image boxes: coordinates over 65535
                        boxes[big] = np.stack([0 * H, 0 * W, H, W], 1)[big]
                    kw["boxes"], kw["flips"] = boxes, flips
                if case["mix"] == "explicit":
                    kw["mix"] = explicit_mix(rng, mix_policy, crop_policy.size, n)
                w.write_batch(e, b, logits, **kw)
                given["batches"][(e, b)] = dict(indices=idx, logits=logits, **kw)
    return given


def explicit_mix(rng: np.random.Generator, mp: MixPolicy, size, n: int):
    """A stored (not derived) mix, as an importer or an arbitrary policy would write it."""
    if rng.random() >= mp.prob:
        return None
    partner = rng.permutation(n)
    if mp.kind == "mixup":
        return Mix("mixup", partner, float(np.float32(rng.uniform(0.2, 0.8))))
    H, W = size
    y0, x0 = int(rng.integers(0, H // 2)), int(rng.integers(0, W // 2))
    y1, x1 = int(rng.integers(y0 + 1, H + 1)), int(rng.integers(x0 + 1, W + 1))
    lam = float(np.float32(1 - (y1 - y0) * (x1 - x0) / (H * W)))
    return Mix("cutmix", partner, lam, np.array([y0, x0, y1, x1], np.int32))


# -- cross-checks against the inputs --------------------------------------------------------
def check_logits(codec, x: np.ndarray, dec: np.ndarray, where: str) -> None:
    """Decoded logits against the logits written, within the codec's documented error (docs/codecs.md)."""
    cfg = codec.get_config()
    x = x.astype(np.float32)
    n, C = x.shape
    assert dec.shape == (n, C) and dec.dtype == np.float32, where
    np.testing.assert_array_equal(dec, codec.decode(codec.encode(x)), err_msg=where)
    if n == 0:
        return
    rows = np.arange(n)
    if cfg["id"] == "dense16":
        np.testing.assert_array_equal(dec, x.astype(np.float16).astype(np.float32), err_msg=where)
    elif cfg["id"] == "dense_q":
        scale = (x.max(1) - x.min(1)) / ((1 << cfg["bits"]) - 1)
        assert (np.abs(dec - x) <= scale[:, None] / 2 + 1e-5 * (1 + np.abs(x))).all(), where
    elif cfg["id"] == "topk":
        k, step = min(cfg["k"], C), cfg["step"]
        top = np.argsort(-x, axis=1, kind="stable")[:, :k]
        assert (dec.argmax(1) == x.argmax(1)).all() and (dec.max(1) == 0).all(), where
        gap = x[rows[:, None], top] - x.max(1, keepdims=True)
        assert (np.abs(dec[rows[:, None], top] - gap) <= step + 1e-5).all(), where
        if k < C:  # every other class holds one tail value, not above the k-th kept one
            tail = np.ones_like(dec, bool)
            tail[rows[:, None], top] = False
            t = dec[tail].reshape(n, C - k)
            assert (t == t[:, :1]).all() and (t[:, 0] <= dec[rows, top[:, -1]]).all(), where
    elif cfg["id"] == "lowrank":
        arrays = codec.get_arrays()
        mean, basis = arrays["mean"].astype(np.float64), arrays["basis"].astype(np.float64)
        xc = x.astype(np.float64) - x.mean(1, keepdims=True)
        proj = ((xc - mean) @ basis.T) @ basis + mean  # the unquantised projection
        bound = cfg["step"] / 2 * np.abs(basis).sum(0) + 1e-4  # coefficient rounding, per class
        k, ts = min(cfg["k"], C), cfg["top_step"]
        top = np.argsort(-xc, axis=1, kind="stable")[:, :k]
        other = np.ones_like(dec, bool)
        other[rows[:, None], top] = False
        assert (dec <= proj + bound)[other].all(), where  # capping below the kept values only lowers
        if k:
            assert (dec.argmax(1) == x.argmax(1)).all(), where
            assert (np.abs(dec[rows, top[:, 0]] - xc[rows, top[:, 0]]) <= ts / 2 + 1e-4).all(), where
            kept = dec[rows[:, None], top]
            assert (np.abs(kept - xc[rows[:, None], top]) <= ts + 1e-4).all(), where
            assert (dec[other].reshape(n, C - k) < kept[:, -1:]).all(), where
            uncapped = other & (dec < np.nextafter(kept[:, -1:], -np.inf))
            assert (dec >= proj - bound)[uncapped].all(), where
        else:
            np.testing.assert_allclose(dec, proj, rtol=0, atol=float(bound.max()), err_msg=where)
    else:
        raise SystemExit(f"no cross-check for codec {cfg['id']!r}: add one to make_golden_files.py")


def mix_tuple(mix):
    if mix is None:
        return None
    return mix.kind, np.asarray(mix.partner, np.int64), float(mix.lam), [int(v) for v in mix.box]


def check_mix(got, want, where: str) -> None:
    got, want = (m if isinstance(m, tuple) else mix_tuple(m) for m in (got, want))
    assert (got is None) == (want is None), where
    if got is not None:
        assert got[0] == want[0] and got[2] == want[2] and list(got[3]) == list(want[3]), (where, got, want)
        np.testing.assert_array_equal(got[1], want[1], err_msg=where)


def read_back(case: dict, path: Path, given: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """Read the file with the generating release, check it against the inputs, return the expectations."""
    report = verify_file(path)
    assert report.ok, report.problems
    arrays: dict[str, np.ndarray] = {}
    orders, rows, mixed = [], [], set()
    with LabelFile(path) as f:
        N, C, seed = case["N"], case["C"], case["seed"]
        cp, mp = CropPolicy(**case["crop_policy"]).to_dict(), MixPolicy(**case["mix_policy"]).to_dict()
        assert (f.num_images, f.num_classes, f.seed, f.num_epochs) == (N, C, seed, len(case["batch_sizes"]))
        assert f.crop_policy.to_dict() == cp and f.mix_policy.to_dict() == mp
        assert f.codec.get_config() == given["codec"].get_config()
        for k, v in given["codec"].get_arrays().items():
            np.testing.assert_array_equal(f.codec.get_arrays()[k], v)
            arrays[f"codec_array_{k}"] = f.codec.get_arrays()[k]
        if given["image_sizes"] is None:
            assert f.image_sizes is None
        else:
            np.testing.assert_array_equal(f.image_sizes, given["image_sizes"])
            arrays["image_sizes"] = f.image_sizes
        if f.format_version < 2:
            assert not case.get("partial") and not case.get("pixels"), f"{case['name']} needs format 2"
        else:
            assert f.pixels == case.get("pixels"), (f.pixels, case.get("pixels"))
            assert f.complete == (not case.get("partial"))
            assert len(f) == sum(len(stored_batches(case, e)) for e in range(len(case["batch_sizes"])))
        for e, bs in enumerate(case["batch_sizes"]):
            assert f.batch_size(e) == bs and f.num_batches(e) == -(-N // bs)
            if f.format_version >= 2:
                assert f.stored_batches(e).tolist() == stored_batches(case, e)
                assert f.is_complete(e) == (e not in case.get("partial", {}))
                for b in sorted(set(range(f.num_batches(e))) - set(stored_batches(case, e))):
                    try:
                        f.read_batch(e, b)
                    except labelstore.LabelStoreError as exc:
                        assert "not stored" in str(exc), exc
                    else:
                        raise AssertionError(f"{case['name']}: epoch {e} batch {b} is not stored but reads")
            order = f.order(e)
            np.testing.assert_array_equal(order, given["orders"][e])
            if case["orders"] == "derived":
                np.testing.assert_array_equal(order, spec_order(seed, e, N))
            orders.append(order)
            for b in stored_batches(case, e):
                where = f"{case['name']} epoch {e} batch {b}"
                batch, inp = f.read_batch(e, b), given["batches"][(e, b)]
                np.testing.assert_array_equal(batch.indices, inp["indices"], err_msg=where)
                np.testing.assert_array_equal(batch.indices, order[b * bs : (b + 1) * bs], err_msg=where)
                check_logits(f.codec, inp["logits"], batch.logits, where)
                if case["crops"] == "explicit":
                    np.testing.assert_array_equal(batch.boxes, inp["boxes"], err_msg=where)
                    np.testing.assert_array_equal(batch.flips, inp["flips"], err_msg=where)
                else:
                    for p, i in enumerate(batch.indices):
                        box, flip = spec_crop(cp, seed, e, int(i), *map(int, given["image_sizes"][i]))
                        assert list(batch.boxes[p]) == box and bool(batch.flips[p]) == flip, (where, p)
                if given["image_sizes"] is not None:
                    hw = given["image_sizes"][batch.indices]
                    assert (batch.boxes[:, :2] >= 0).all() and (batch.boxes[:, 2:] >= 1).all()
                    assert (batch.boxes[:, :2] + batch.boxes[:, 2:] <= hw).all(), where
                want = inp.get("mix") if case["mix"] == "explicit" else (
                    spec_mix(mp, cp["size"], seed, e, b, len(batch)))
                check_mix(batch.mix, want, where)
                if batch.mix is not None:
                    mixed.add(batch.mix.kind)
                elif mp["kind"] != "none":
                    mixed.add("unmixed")
                rows.append((e, b, batch))
        arrays.update(pack_expected(orders, rows))
        if mp["kind"] != "none":
            assert mp["kind"] in mixed, f"{case['name']}: no batch is mixed; pick another seed"
            if mp["prob"] < 1:
                assert "unmixed" in mixed, f"{case['name']}: prob < 1 but every batch is mixed; pick another seed"
        if case["sizes"] == "wide":
            assert int(np.max(f.read_batch(0, 0).boxes)) > 0xFFFF or any(
                int(np.max(bt.boxes)) > 0xFFFF for bt in f.batches()), "no box needs the 4-byte layout"
        meta = {
            "format_version": f.format_version,
            "num_images": f.num_images,
            "num_classes": f.num_classes,
            "seed": f.seed,
            "crops": f.crops_mode,
            "orders": f.orders_mode,
            "mix": f.mix_mode,
            "crop_policy": f.crop_policy.to_dict(),
            "mix_policy": f.mix_policy.to_dict(),
            "codec": f.codec.get_config(),
            "source": f.source,
            "source_temperature": f.source_temperature,
            "teacher": f.teacher,
            "user_attrs": f.user_attrs,
            "image_fingerprint": f.image_fingerprint,
            "has_image_sizes": f.image_sizes is not None,
            "num_epochs": f.num_epochs,
            "batch_sizes": [f.batch_size(e) for e in range(f.num_epochs)],
            "num_batches": [f.num_batches(e) for e in range(f.num_epochs)],
            "num_records": [[len(f.read_crops(e, b)) for b in stored_batches(case, e)] for e in range(f.num_epochs)],
        }
        if f.format_version >= 2:  # what format 2 added
            meta["stored_batches"] = [f.stored_batches(e).tolist() for e in range(f.num_epochs)]
            meta["pixels"] = f.pixels
    want_meta = {
        "crops": case["crops"], "orders": case["orders"],
        "mix": case["mix"] if mp["kind"] != "none" else "none",
        "source": "probabilities" if case["source_T"] else "logits", "source_temperature": case["source_T"],
        "teacher": case["teacher"], "user_attrs": case["attrs"] or {}, "image_fingerprint": given["fingerprint"],
        "has_image_sizes": case["sizes"] is not None, "batch_sizes": case["batch_sizes"],
    }
    assert {k: meta[k] for k in want_meta} == want_meta, (meta, want_meta)
    return meta, arrays


def pack_expected(orders: list[np.ndarray], rows: list) -> dict[str, np.ndarray]:
    """The expected batches as a few concatenated arrays (one .npy per array keeps the .npz small).

    Batch ``j`` is (``batch_epoch[j]``, ``batch_index[j]``); its records are rows
    ``batch_start[j] : batch_start[j + 1]`` of ``indices``, ``logits``, ``boxes``, ``flips`` and
    ``mix_partner`` (-1 when the batch is not mixed); ``mix_kind[j]`` is "" when not mixed.
    """
    mixes = [bt.mix for _, _, bt in rows]
    return {
        "orders": np.stack(orders).astype(np.int64),
        "batch_epoch": np.array([e for e, _, _ in rows], np.int64),
        "batch_index": np.array([b for _, b, _ in rows], np.int64),
        "batch_start": np.cumsum([0] + [len(bt) for _, _, bt in rows]).astype(np.int64),
        "indices": np.concatenate([bt.indices for _, _, bt in rows]).astype(np.int64),
        "logits": np.concatenate([bt.logits for _, _, bt in rows]),
        "boxes": np.concatenate([bt.boxes for _, _, bt in rows]).astype(np.int64),
        "flips": np.concatenate([bt.flips for _, _, bt in rows]).astype(bool),
        "mix_kind": np.array([m.kind if m else "" for m in mixes], dtype="<U6"),
        "mix_lam": np.array([m.lam if m else np.nan for m in mixes], np.float64),
        "mix_box": np.array([np.asarray(m.box) if m else np.zeros(4) for m in mixes], np.int64).reshape(-1, 4),
        "mix_partner": np.concatenate([np.asarray(m.partner) if m else np.full(len(bt), -1)
                                       for m, (_, _, bt) in zip(mixes, rows)]).astype(np.int64),
    }


def provenance() -> dict:
    root = Path(labelstore.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "labelstore"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"labelstore_version": labelstore.__version__, "git_commit": commit, "labelstore_dirty": dirty,
            "numpy": np.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="folder to write, e.g. tests/golden/files/v1")
    ap.add_argument("--force", action="store_true", help="replace golden files already in --out")
    args = ap.parse_args(argv)

    where = Path(labelstore.__file__).resolve()
    print(f"labelstore {labelstore.__version__} from {where}")
    want_root = os.environ.get("LABELSTORE_GOLDEN_ROOT")
    if want_root and not where.is_relative_to(Path(want_root).resolve()):
        raise SystemExit(f"labelstore was imported from {where}, not from {want_root}: set PYTHONPATH={want_root}")
    out: Path = args.out
    m = re.fullmatch(r"v(\d+)", out.name)
    if not m:
        raise SystemExit(f"--out must be a folder named v<N> (the format version it holds), got {out.name}")
    cases = cases_for(int(m.group(1)))
    if not cases:
        raise SystemExit(f"no golden cases for format version {m.group(1)}: add them to make_golden_files.py")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise SystemExit(f"{out} already holds golden files; golden files are written once (--force replaces them)")
    prov = provenance()
    if prov["labelstore_dirty"]:
        raise SystemExit("labelstore/ has uncommitted changes: generate golden files from a clean release checkout")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*"):
        old.unlink()
    for case in cases:
        path = out / f"{case['name']}.h5"
        given = write_case(case, path)
        meta, arrays = read_back(case, path, given)
        if meta["format_version"] != int(m.group(1)):
            raise SystemExit(f"{path} has format version {meta['format_version']}, but the folder is {out.name}")
        meta["file_crc32"] = zlib.crc32(path.read_bytes())
        meta["generated_by"] = prov
        (out / f"{case['name']}.expected.json").write_text(json.dumps(meta, indent=1, sort_keys=True, ensure_ascii=False) + "\n",
                                                        encoding="utf-8")
        np.savez_compressed(out / f"{case['name']}.expected.npz", **arrays)
        print(f"{path.name}: {path.stat().st_size} B, {sum(map(len, meta['num_records']))} batches, codec {case['codec']}")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(cases)} golden files in {out}: {total} bytes in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
