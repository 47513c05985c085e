"""The reference decoder in docs/format.md ("A reference decoder") decodes what LabelFile does.

The code block is taken from the spec itself and run as it stands (it imports numpy, h5py,
zstandard and the standard library, never labelstore), so the spec and the reader cannot
drift apart unnoticed: logits bit for bit, indices, boxes, flips and mixing equal, on files of
every format version the decoder covers, partial epochs and the golden files included.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from labelstore import CropPolicy, LabelFile, LabelWriter, Mix, MixPolicy

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "files"
HEADING = "## A reference decoder"


def decoder_source() -> str:
    text = (ROOT / "docs" / "format.md").read_text(encoding="utf-8")
    assert text.count(f"\n{HEADING}\n") == 1, f"docs/format.md has no single section {HEADING!r}"
    section = text.split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    assert len(blocks) == 1, f"{HEADING!r} should hold exactly one python code block, found {len(blocks)}"
    return blocks[0]


@pytest.fixture(scope="module")
def ref():
    src = decoder_source()
    assert not re.search(r"^\s*(import|from)\s+labelstore", src, flags=re.M), "the reference decoder imports labelstore"
    namespace: dict = {"__name__": "reference_decoder"}
    exec(compile(src, "docs/format.md#a-reference-decoder", "exec"), namespace)
    return namespace["ReferenceLabelFile"]


def test_the_reference_decoder_is_short_and_self_contained():
    src = decoder_source()
    imports = set(re.findall(r"^(?:import|from)\s+([\w.]+(?:\s*,\s*\w+)*)", src, flags=re.M))
    modules = {m.strip() for line in imports for m in line.split(",")}
    assert modules <= {"json", "struct", "zlib", "h5py", "numpy", "zstandard"}, modules
    assert len(src.splitlines()) <= 130


def covered(attrs: dict, codec: dict) -> set[str]:
    """The parts of a batch the reference decoder decodes for this file (its docstring lists them)."""
    parts = {"indices"}
    if codec["id"] in ("dense16", "dense_q"):
        parts.add("logits")
    if attrs["crops"] == "explicit":
        parts |= {"boxes", "flips"}
    if attrs["mix"] in ("explicit", "none"):
        parts.add("mix")
    return parts


def compare(ref_cls, path: Path, want_parts: set[str] | None = None) -> set[str]:
    """Decode every stored batch of ``path`` with the reference decoder and LabelFile; returns the parts compared."""
    r = ref_cls(path)
    seen: set[str] = set()
    with LabelFile(path) as f:
        assert r.attrs["format_version"] == f.format_version
        assert list(r.num_stored) == [len(f.stored_batches(e)) for e in range(f.num_epochs)]
        assert json.loads(r.attrs["pixels"]) == f.pixels if "pixels" in r.attrs else f.pixels is None
        for e in range(f.num_epochs):
            assert r.batch_size[e] == f.batch_size(e) and r.num_batches[e] == f.num_batches(e)
            np.testing.assert_array_equal(r.order(e), f.order(e))
            np.testing.assert_array_equal(r.rows(e)["batch"], f.stored_batches(e))
            for b in sorted(set(range(f.num_batches(e))) - set(f.stored_batches(e).tolist())):
                with pytest.raises(KeyError, match="not stored"):
                    r.read(e, b)
            for b in f.stored_batches(e).tolist():
                got, want, where = r.read(e, b), f.read_batch(e, b), f"{path.name} epoch {e} batch {b}"
                assert set(got) == covered(r.attrs, r.codec), where
                seen |= set(got)
                np.testing.assert_array_equal(got["indices"], want.indices, err_msg=where)
                if "logits" in got:
                    assert got["logits"].dtype == np.float32 and got["logits"].shape == want.logits.shape, where
                    # bit for bit: the same float32 values, not just close ones
                    np.testing.assert_array_equal(got["logits"].view(np.uint32), want.logits.view(np.uint32), err_msg=where)
                if "boxes" in got:
                    np.testing.assert_array_equal(got["boxes"], want.boxes, err_msg=where)
                    np.testing.assert_array_equal(got["flips"], want.flips, err_msg=where)
                if "mix" in got:
                    assert (got["mix"] is None) == (want.mix is None), where
                    if want.mix is not None:
                        m = got["mix"]
                        assert (m["kind"], m["lam"], m["box"]) == (want.mix.kind, want.mix.lam, tuple(want.mix.box.tolist())), where
                        np.testing.assert_array_equal(m["partner"], want.mix.partner, err_msg=where)
    if want_parts is not None:
        assert seen == want_parts, (path.name, seen)
    return seen


N, C = 23, 7


def write(path: Path, codec: str, *, crops="explicit", orders="explicit", mix="explicit", mix_kind="cutmix",
          partial: dict | None = None, seed=3) -> Path:
    """Three epochs (batch sizes 5, 8, 23) with explicit crops / orders / mix where asked."""
    rng = np.random.default_rng(seed)
    sizes = np.stack([rng.integers(16, 40, N), rng.integers(16, 40, N)], 1)
    with LabelWriter(path, num_classes=C, num_images=N, codec=codec, seed=seed, image_sizes=sizes,
                     crop_policy=CropPolicy(size=(12, 12)), mix_policy=MixPolicy(kind=mix_kind, prob=0.8),
                     crops=crops, orders=orders, mix=mix, pixels={"backend": "torch", "gray": False}) as w:
        for e, bs in enumerate((5, 8, 23)):
            order = rng.permutation(N) if orders == "explicit" else None
            w.begin_epoch(e, bs, order, batches=(partial or {}).get(e))
            for b in w.stored_batches(e).tolist():
                idx = w.batch_indices(e, b)
                n, kw = len(idx), {}
                if crops == "explicit":
                    h, wd = rng.integers(1, sizes[idx, 0] + 1), rng.integers(1, sizes[idx, 1] + 1)
                    kw["boxes"] = np.stack([rng.integers(0, sizes[idx, 0] - h + 1), rng.integers(0, sizes[idx, 1] - wd + 1), h, wd], 1)
                    kw["flips"] = rng.random(n) < 0.5
                if mix == "explicit" and rng.random() < 0.7:
                    box = np.array([1, 2, 9, 11] if mix_kind == "cutmix" else [0, 0, 0, 0], np.int32)
                    kw["mix"] = Mix(mix_kind, rng.permutation(n), float(np.float32(rng.uniform(0.1, 0.9))), box)
                logits = rng.normal(0, 3, (n, C)).astype(np.float32)
                logits[0, 0] = 1e4 if b == 0 else logits[0, 0]  # a wide range, and fp16's rounding far from 0
                w.write_batch(e, b, logits, **kw)
    return path


ALL = {"indices", "logits", "boxes", "flips", "mix"}


@pytest.mark.parametrize("codec", ["dense16", "dense_q:bits=4", "dense_q:bits=6", "dense_q:bits=8"])
def test_reference_decoder_matches_labelfile_on_explicit_files(ref, tmp_path, codec):
    path = write(tmp_path / "labels.h5", codec, mix_kind="mixup" if "6" in codec else "cutmix")
    compare(ref, path, ALL)


@pytest.mark.parametrize("partial", [{1: [0, 1]}, {0: [1, 3, 4], 1: [2]}], ids=["lpld_prefix", "gaps"])
def test_reference_decoder_reads_partial_epochs(ref, tmp_path, partial):
    path = write(tmp_path / "labels.h5", "dense_q:bits=6", partial=partial)
    with LabelFile(path) as f:
        assert not f.complete
    compare(ref, path, ALL)


def test_reference_decoder_derives_orders_and_leaves_out_derived_crops_and_mix(ref, tmp_path):
    path = write(tmp_path / "labels.h5", "dense16", crops="derived", orders="derived", mix="derived", partial={1: [1, 2]})
    compare(ref, path, {"indices", "logits"})
    path = write(tmp_path / "nomix.h5", "dense_q:bits=8", orders="derived", mix_kind="none", mix="derived")
    compare(ref, path, ALL)


def test_reference_decoder_leaves_out_other_codecs_logits(ref, tmp_path):
    path = write(tmp_path / "labels.h5", "topk:k=3")
    compare(ref, path, ALL - {"logits"})


GOLDEN_FILES = sorted(GOLDEN.glob("v*/*.h5"))


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_reference_decoder_reads_the_golden_files(ref, path):
    seen = compare(ref, path)
    meta = json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))
    assert seen == covered(meta, meta["codec"])


def test_golden_files_give_the_reference_decoder_every_part():
    """Every part the decoder covers is checked on some golden file of each format version."""
    for version in ("v1", "v2"):
        metas = [json.loads(p.with_name(p.stem + ".expected.json").read_text(encoding="utf-8"))
                 for p in GOLDEN_FILES if p.parent.name == version]
        assert any(covered(m, m["codec"]) == ALL for m in metas), version


def test_reference_decoder_refuses_damaged_files(ref, tmp_path):
    good = write(tmp_path / "labels.h5", "dense16").read_bytes()
    for name, damage in [("flipped", lambda b: b[:-100] + bytes([b[-100] ^ 1]) + b[-99:]),
                         ("truncated", lambda b: b[:-1]), ("appended", lambda b: b + b"\0"),
                         ("not a label file", lambda b: b"\0" * 16 + b[16:])]:
        path = tmp_path / f"{name}.h5"
        path.write_bytes(damage(good))
        with pytest.raises(ValueError):
            ref(path)
