"""Label files open in HDF5 1.10's own tools (docs/format.md: "any HDF5 1.10+ reader").

Files of every codec and every crops / orders / mix mode, partial epochs and codec arrays are
written with the public ``LabelWriter`` and then read by ``h5ls`` and ``h5dump`` of Debian's
``hdf5-tools`` (HDF5 1.10; ``scripts/setup.sh`` installs it). A tool that cannot read an
object still exits 0 and prints ``*ERROR*`` or "unable to ...", so the output is checked too,
and the values ``h5dump`` prints are compared with what h5py reads.

The golden files of format version 1 are *not* held to this: format 1 was written with HDF5
``libver="latest"``, and HDF5 1.10 tools cannot open those files' chunked datasets (h5ls prints
``Dataset *ERROR*``). docs/format.md records that; their readability is the job of
tests/test_golden_files.py. Golden files of format 2 and later must pass.
"""
from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from labelstore import CropPolicy, LabelFile, LabelWriter, Mix, MixPolicy, codec_ids, parse_codec_spec

needs_tools = pytest.mark.skipif(
    shutil.which("h5ls") is None or shutil.which("h5dump") is None,
    reason="h5ls/h5dump (Debian's hdf5-tools) are not on PATH; scripts/setup.sh installs them",
)

GOLDEN = Path(__file__).parent / "golden" / "files"
BAD = re.compile(r"error|unable", re.IGNORECASE)
N, C = 13, 6

# Every crops x orders x mix mode once; the codecs take turns so that each appears.
MIXES = [("none", "none"), ("derived", "cutmix"), ("derived", "mixup"), ("explicit", "cutmix"), ("explicit", "mixup")]
MODES = [dict(crops=c, orders=o, mix=m, mix_kind=k, codec=codec_ids()[i % len(codec_ids())], partial=i % 2 == 0,
              pixels=i % 3 == 0, sizes=c == "derived" or i % 4 < 2)
         for i, (c, o, (m, k)) in enumerate(itertools.product(("derived", "explicit"), ("derived", "explicit"), MIXES))]
# and each codec with its default settings, codec arrays (lowrank's basis) included
MODES += [dict(crops="derived", orders="derived", mix="derived", mix_kind="cutmix", codec=cid, partial=True,
               pixels=True, sizes=True) for cid in codec_ids()]


def case_id(m: dict) -> str:
    return f"{m['codec']}-crops_{m['crops']}-orders_{m['orders']}-mix_{m['mix']}_{m['mix_kind']}" + (
        "-partial" if m["partial"] else "") + ("-pixels" if m["pixels"] else "") + ("" if m["sizes"] else "-nosizes")


def write_file(path: Path, m: dict) -> Path:
    """A small label file of mode ``m``: 2 epochs (batch sizes 4 and 3), the second partial when asked."""
    rng = np.random.default_rng(len(case_id(m)))
    codec = parse_codec_spec(m["codec"], C)
    if codec.needs_fit:
        codec.fit(rng.normal(0, 2, (64, C)).astype(np.float32))
    sizes = np.stack([rng.integers(20, 48, N), rng.integers(20, 48, N)], 1) if m["sizes"] else None
    pixels = {"crop_size": [16, 16], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "gray": False,
              "dtype": "float32", "backend": "torch", "interpolation": "bilinear"} if m["pixels"] else None
    mix_mode = m["mix"] if m["mix"] != "none" else "derived"
    with LabelWriter(path, num_classes=C, num_images=N, codec=codec, seed=5, image_sizes=sizes,
                     crop_policy=CropPolicy(size=(16, 16)), mix_policy=MixPolicy(kind=m["mix_kind"], prob=0.7),
                     crops=m["crops"], orders=m["orders"], mix=mix_mode, teacher={"name": "t"},
                     attrs={"case": case_id(m)}, pixels=pixels, image_fingerprint="sha256:" + "0" * 64) as w:
        for e, bs in enumerate((4, 3)):
            order = rng.permutation(N) if m["orders"] == "explicit" else None
            batches = [0, 2, 4] if (e == 1 and m["partial"]) else None  # 5 batches: 1 and 3 left out
            w.begin_epoch(e, bs, order, batches=batches)
            for b in w.stored_batches(e).tolist():
                n = len(w.batch_indices(e, b))
                kw = {}
                if m["crops"] == "explicit":
                    kw["boxes"] = np.tile([1, 2, 10, 12], (n, 1))
                    kw["flips"] = rng.random(n) < 0.5
                if m["mix"] == "explicit" and b % 2 == 0:
                    box = np.array([2, 3, 9, 12] if m["mix_kind"] == "cutmix" else [0, 0, 0, 0], np.int32)
                    kw["mix"] = Mix(m["mix_kind"], rng.permutation(n), 0.625, box)
                w.write_batch(e, b, rng.normal(0, 2, (n, C)).astype(np.float32), **kw)
    return path


def run(*args: str) -> str:
    """A tool's output (stdout and stderr), after checking it read everything it was asked for."""
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"{' '.join(args)} exited {res.returncode}:\n{out[-3000:]}"
    bad = [line for line in out.splitlines() if BAD.search(line)]
    assert not bad, f"{' '.join(args)} could not read part of the file:\n" + "\n".join(bad[:20])
    return out


def h5_objects(path: Path) -> tuple[dict[str, h5py.Dataset], list[str], list[str]]:
    """(datasets by path with values, group paths, root attribute names), walked with h5py."""
    datasets, groups = {}, []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets["/" + name] = obj[...]
            else:
                groups.append("/" + name)
        f.visititems(visit)
        attrs = list(f.attrs)
    return datasets, groups, attrs


def dumped_values(text: str) -> dict[str, list[str]]:
    """The numbers ``h5dump -d ...`` printed for each dataset, in storage order (compound fields in order)."""
    out = {}
    for block in re.split(r'^DATASET "', text, flags=re.M)[1:]:
        name, body = block.split('"', 1)
        data = body.split("DATA {", 1)[1]
        data = re.sub(r"\(\d+(?:,\d+)*\):", " ", data)  # the (i) / (i,j) position labels
        out[name] = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf", data)
    return out


def flat_values(arr: np.ndarray) -> np.ndarray:
    """A dataset's values as h5dump lists them: element by element, compound fields in order."""
    if arr.dtype.names:
        return np.stack([arr[k].astype(np.float64) for k in arr.dtype.names], -1).reshape(-1)
    return arr.reshape(-1)


def check_with_tools(path: Path) -> None:
    datasets, groups, attrs = h5_objects(path)
    assert {"/epochs", "/chunks", "/data"} <= datasets.keys()

    listing = run("h5ls", "-r", str(path))
    listed = {}
    for line in listing.splitlines():
        m = re.match(r"(\S+)\s+(Dataset|Group)\b\s*(.*)", line)
        if m:
            listed[m.group(1)] = (m.group(2), m.group(3))
    for name, values in datasets.items():
        assert name in listed, f"h5ls -r does not list {name}:\n{listing}"
        kind, shape = listed[name]
        assert kind == "Dataset" and shape == "{" + ", ".join(map(str, values.shape)) + "}", (name, listed[name])
    for name in groups:
        assert listed.get(name, ("",))[0] == "Group", f"h5ls -r does not list the group {name}:\n{listing}"

    header = run("h5dump", "-H", "-A", str(path))
    for name in attrs:
        assert f'ATTRIBUTE "{name}"' in header, f"h5dump -H -A does not show the attribute {name}"
    for name in datasets:
        assert f'DATASET "{name.rsplit("/", 1)[1]}"' in header, f"h5dump -H -A does not show {name}"

    # every dataset's full data (all are small here): h5dump prints the values h5py reads
    args = ["h5dump", "-m", "%.9g"]  # 9 significant digits round-trip float32 exactly
    for name in datasets:
        args += ["-d", name]
    dumped = dumped_values(run(*args, str(path)))
    assert set(dumped) == set(datasets)
    for name, values in datasets.items():
        want = flat_values(values)
        got = np.array(dumped[name], dtype=np.float64 if values.dtype.names else values.dtype)
        assert got.shape == want.shape, (path.name, name, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {name}: h5dump shows other values than h5py")


@needs_tools
@pytest.mark.parametrize("mode", MODES, ids=case_id)
def test_hdf5_tools_read_every_kind_of_label_file(tmp_path, mode):
    path = write_file(tmp_path / "labels.h5", mode)
    with LabelFile(path) as f:  # the file is what the case says
        assert f.format_version >= 2 and f.codec.codec_id == mode["codec"]
        assert (f.crops_mode, f.orders_mode, f.mix_mode) == (mode["crops"], mode["orders"], mode["mix"])
        assert f.is_complete(1) != mode["partial"] and (f.pixels is not None) == mode["pixels"]
        assert ("codec_arrays" in h5py.File(path, "r")) == bool(f.codec.get_arrays())
    check_with_tools(path)


def test_every_codec_and_mode_is_covered():
    assert {m["codec"] for m in MODES} == set(codec_ids())
    assert {(m["crops"], m["orders"], m["mix"], m["mix_kind"]) for m in MODES} == {
        (c, o, mx, k) for c in ("derived", "explicit") for o in ("derived", "explicit") for mx, k in MIXES}
    assert {(m["partial"], m["pixels"], m["sizes"]) for m in MODES if m["crops"] == "explicit"} >= {
        (True, True, True), (False, False, False)}


V2_PLUS = sorted(p for p in GOLDEN.glob("v*/*.h5") if int(p.parent.name[1:]) >= 2)


@needs_tools
@pytest.mark.parametrize("path", V2_PLUS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden_files_of_format_2_and_later_open_in_hdf5_tools(path):
    # (format 1's golden files are left out on purpose: see the module docstring)
    check_with_tools(path)


def test_there_are_golden_files_of_format_2():
    assert any(p.parent.name == "v2" for p in V2_PLUS), "tests/golden/files/v2 is missing"
