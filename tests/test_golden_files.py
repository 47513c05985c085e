"""Golden label files: every release must read every old format version to the same values.

``tests/golden/files/v<N>/`` holds small label files written once by the release that wrote
format version N, each with what a reader must decode from it (``<name>.expected.npz`` and
``<name>.expected.json``). ``tests/golden/make_golden_files.py`` wrote them (its docstring
has the command). An old version's set is never regenerated: if a test here fails, the
reader changed, not the fixture.
"""
from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from labelstore import LabelFile, LabelStoreError, codec_ids, verify_file

GOLDEN = Path(__file__).parent / "golden" / "files"
FILES = sorted(GOLDEN.glob("v*/*.h5"))

# What format version 1 had; listed here so that a codec added later does not need v1 files.
V1_CODEC_IDS = ("dense16", "dense_q", "lowrank", "topk")
V1_DENSE_Q_BITS = (4, 6, 8)
V2_CODEC_IDS = V1_CODEC_IDS  # format 2 changed the file around the chunks, not the codecs

ARRAY_KEYS = {"orders", "batch_epoch", "batch_index", "batch_start", "indices", "logits", "boxes", "flips",
              "mix_kind", "mix_lam", "mix_box", "mix_partner"}
META_KEYS = ("num_images", "num_classes", "seed", "source", "teacher", "user_attrs", "num_epochs")


def load_expected(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))
    with np.load(path.with_name(path.stem + ".expected.npz")) as z:  # no pickles: allow_pickle stays False
        arrays = dict(z)
    return meta, arrays


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_file_reads_to_its_expected_values(path: Path):
    meta, want = load_expected(path)
    assert zlib.crc32(path.read_bytes()) == meta["file_crc32"], "the golden file itself changed; restore it from git"
    assert ARRAY_KEYS <= want.keys() and not {k for k in want.keys() - ARRAY_KEYS
                                              if k != "image_sizes" and not k.startswith("codec_array_")}

    report = verify_file(path)
    assert report.ok, report.problems

    with LabelFile(path) as f:
        assert f.format_version == int(path.parent.name[1:]) == meta["format_version"]
        for key in META_KEYS:
            assert getattr(f, key) == meta[key], key
        assert (f.crops_mode, f.orders_mode, f.mix_mode) == (meta["crops"], meta["orders"], meta["mix"])
        assert f.crop_policy.to_dict() == meta["crop_policy"]
        assert f.mix_policy.to_dict() == meta["mix_policy"]
        assert f.codec.get_config() == meta["codec"]
        assert f.source_temperature == meta["source_temperature"]
        assert f.image_fingerprint == meta["image_fingerprint"]
        codec_arrays = f.codec.get_arrays()
        assert {f"codec_array_{k}" for k in codec_arrays} == {k for k in want if k.startswith("codec_array_")}
        for k, v in codec_arrays.items():
            np.testing.assert_array_equal(v, want[f"codec_array_{k}"])
        if meta["has_image_sizes"]:
            np.testing.assert_array_equal(f.image_sizes, want["image_sizes"])
        else:
            assert f.image_sizes is None and "image_sizes" not in want

        assert [f.batch_size(e) for e in range(f.num_epochs)] == meta["batch_sizes"]
        assert [f.num_batches(e) for e in range(f.num_epochs)] == meta["num_batches"]
        # Format 2 added partial epochs and the pixels attribute; a format-1 file has neither.
        if meta["format_version"] >= 2:
            assert {"stored_batches", "pixels"} <= meta.keys()
        stored = meta.get("stored_batches", [list(range(nb)) for nb in meta["num_batches"]])
        assert f.pixels == meta.get("pixels")
        assert [f.stored_batches(e).tolist() for e in range(f.num_epochs)] == stored
        assert [f.is_complete(e) for e in range(f.num_epochs)] == [len(s) == nb for s, nb in zip(stored, meta["num_batches"])]
        assert f.complete == all(len(s) == nb for s, nb in zip(stored, meta["num_batches"]))
        assert f.stored_batches().tolist() == [[e, b] for e, s in enumerate(stored) for b in s]
        assert [[e, b] for e, b in zip(want["batch_epoch"].tolist(), want["batch_index"].tolist())] == f.stored_batches().tolist()
        assert len(f) == len(want["batch_epoch"]) == sum(map(len, stored))
        assert [list(map(len, (f.read_crops(e, b) for b in s))) for e, s in enumerate(stored)] == meta["num_records"]
        assert f.num_records == len(want["indices"]) == sum(map(sum, meta["num_records"]))
        assert [(bt.epoch, bt.batch) for bt in f.batches()] == [(e, b) for e, s in enumerate(stored) for b in s]
        for e, s in enumerate(stored):
            for b in sorted(set(range(meta["num_batches"][e])) - set(s)):
                with pytest.raises(LabelStoreError, match="not stored"):
                    f.read_batch(e, b)
        for e in range(f.num_epochs):
            np.testing.assert_array_equal(f.order(e), want["orders"][e])

        # Learned codecs decode through a matrix product, which BLAS may round differently on
        # another CPU (docs/codecs.md: ~1e-6); every other codec must decode bit for bit.
        atol = 1e-5 if f.codec.needs_fit else 0.0
        start = want["batch_start"]
        for j, (e, b) in enumerate(zip(want["batch_epoch"].tolist(), want["batch_index"].tolist())):
            rows = slice(start[j], start[j + 1])
            where = f"{path.name} epoch {e} batch {b}"
            batch = f.read_batch(e, b)
            assert batch.logits.dtype == np.float32, where
            if atol:
                np.testing.assert_allclose(batch.logits, want["logits"][rows], rtol=0, atol=atol, err_msg=where)
            else:
                np.testing.assert_array_equal(batch.logits, want["logits"][rows], err_msg=where)
            np.testing.assert_array_equal(f.read_logits(e, b), batch.logits, err_msg=where)
            crops = f.read_crops(e, b)  # the no-label path (touches no bytes when crops and mix are derived)
            assert crops.logits is None, where
            for got in (batch, crops):
                np.testing.assert_array_equal(got.indices, want["indices"][rows], err_msg=where)
                np.testing.assert_array_equal(got.boxes, want["boxes"][rows], err_msg=where)
                np.testing.assert_array_equal(got.flips, want["flips"][rows], err_msg=where)
                kind = str(want["mix_kind"][j])
                if not kind:
                    assert got.mix is None, where
                    continue
                assert got.mix is not None and got.mix.kind == kind, where
                assert got.mix.lam == want["mix_lam"][j], where
                np.testing.assert_array_equal(got.mix.box, want["mix_box"][j], err_msg=where)
                np.testing.assert_array_equal(got.mix.partner, want["mix_partner"][rows], err_msg=where)
            for p, image in enumerate(batch.indices.tolist()):
                assert f.locate(e, image) == (b, p), where


def test_golden_folders_are_complete():
    folders = sorted(p for p in GOLDEN.iterdir() if p.is_dir())
    assert [p.name for p in folders if not re.fullmatch(r"v\d+", p.name)] == []
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        stems = {n[: -len(".h5")] for n in names if n.endswith(".h5")}
        assert stems, f"{folder} holds no golden files"
        assert names == {s + suffix for s in stems for suffix in (".h5", ".expected.json", ".expected.npz")}


def golden_metas(version: int) -> list[dict]:
    folder = GOLDEN / f"v{version}"
    assert folder.is_dir(), f"tests/golden/files/v{version} is missing: see tests/golden/make_golden_files.py"
    return [load_expected(p)[0] for p in sorted(folder.glob("*.h5"))]


def test_v1_golden_files_cover_every_v1_codec_and_mode():
    metas = golden_metas(1)
    assert set(V1_CODEC_IDS) <= set(codec_ids()), "a codec of format 1 is gone: its files no longer read"
    assert {m["codec"]["bits"] for m in metas if m["codec"]["id"] == "dense_q"} >= set(V1_DENSE_Q_BITS)
    assert all("stored_batches" not in m and "pixels" not in m for m in metas)
    check_coverage(metas, V1_CODEC_IDS)


def test_v2_golden_files_cover_every_codec_and_mode_and_what_format_2_added():
    metas = golden_metas(2)
    assert set(V2_CODEC_IDS) <= set(codec_ids()), "a codec of format 2 is gone: its files no longer read"
    check_coverage(metas, V2_CODEC_IDS)
    assert all(m["format_version"] == 2 for m in metas)
    # partial epochs: a prefix of the batches (LPLD's pool), batches with a gap, the short last batch alone
    partial = [(s, nb) for m in metas for s, nb in zip(m["stored_batches"], m["num_batches"]) if len(s) < nb]
    assert any(s == list(range(len(s))) for s, nb in partial)
    assert any(s != list(range(s[0], s[-1] + 1)) for s, nb in partial)
    assert any(s == [nb - 1] for s, nb in partial)
    assert any(all(len(s) == nb for s, nb in zip(m["stored_batches"], m["num_batches"])) for m in metas)
    assert any(len(s) < nb and s[-1] == nb - 1 for s, nb in partial), "a partial epoch that stores its short last batch"
    # the pixels attribute, set (colour and grey) and unset
    pixels = [m["pixels"] for m in metas]
    assert None in pixels and {p["gray"] for p in pixels if p} == {True, False}


def check_coverage(metas: list[dict], codecs) -> None:
    assert {m["codec"]["id"] for m in metas} >= set(codecs)

    def seen(fn):
        return {fn(m) for m in metas}

    assert seen(lambda m: (m["crops"], m["crop_policy"]["kind"])) == {
        (c, k) for c in ("derived", "explicit") for k in ("random_resized_crop", "full")}
    assert seen(lambda m: m["orders"]) == {"derived", "explicit"}
    assert seen(lambda m: (m["mix"], m["mix_policy"]["kind"])) >= {
        ("none", "none"), ("derived", "cutmix"), ("derived", "mixup"), ("explicit", "cutmix"), ("explicit", "mixup")}
    assert seen(lambda m: m["source"]) == {"logits", "probabilities"}
    assert seen(lambda m: m["image_fingerprint"] is None) == {True, False}
    assert seen(lambda m: m["has_image_sizes"]) == {True, False}
    assert any(len(set(m["batch_sizes"])) > 1 for m in metas)
