"""Fuzzing the importers: damaged or malformed files in a prior-art layout raise LabelStoreError, never crash."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelstore import LabelFile, LabelStoreError
from labelstore.pack import pack
from fixtures_prior_art import write_fkd, write_hald, write_sre2l

WRITERS = {
    "sre2l": lambda root: write_sre2l(root, num_images=24, epochs=2, batch_size=8, image_size=(32, 32)),
    "hald": lambda root: write_hald(root, num_images=24, epochs=2, batch_size=8),
    "fkd": lambda root: write_fkd(root, classes=2, per_class=3, num_crops=3),
}

# Pickled structures the importers must reject cleanly: wrong lengths, types, shapes, dtypes.
MALFORMED = [
    [],
    {"coords": torch.zeros(8, 4)},
    [torch.zeros(8, 4)] * 3,
    [torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool), None, 0.5, [0, 0, 1, 1], torch.zeros(8, 10).half()][:5],
    [torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool), torch.arange(8), 0.5, [0, 0, 1, 1], torch.zeros(3, 10).half()],
    [torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool), torch.arange(8), 0.5, [0, 0, 1, 1], torch.zeros(8, 7).half()],
    [torch.full((8, 4), float("nan")), torch.zeros(8, dtype=torch.bool), torch.arange(8), 0.5, [0, 0, 1, 1], torch.zeros(8, 10).half()],
    [torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool), torch.arange(8) + 100, 0.5, [0, 0, 1, 1], torch.zeros(8, 10).half()],
    [torch.zeros(8, 4), torch.zeros(8, dtype=torch.bool), torch.arange(8), 0.5, [0, 0, 1, 1], torch.full((8, 10), float("inf")).half()],
    ["text", "more", 1, 2, 3, 4],
    torch.zeros(5),
    np.zeros((2, 2)),
]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    out = {}
    for name, write in WRITERS.items():
        root = tmp_path_factory.mktemp(name) / "src"
        write(root)
        out[name] = root
    return out


def _pack_damaged(src: Path, damage) -> None:
    with tempfile.TemporaryDirectory() as d:
        work = Path(d) / "src"
        shutil.copytree(src, work)
        files = sorted(p for p in work.rglob("*") if p.is_file() and p.suffix in (".tar", ".pt", ".json"))
        damage(files)
        try:
            pack(work, Path(d) / "out.h5", progress=False, log=lambda *_: None)
        except LabelStoreError:
            return
        # a damage the importer can absorb must still give a readable, verified file
        with LabelFile(Path(d) / "out.h5") as f:
            for batch in f.batches():
                assert np.isfinite(batch.logits).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.sampled_from(sorted(WRITERS)), pick=st.integers(0, 10**6), data=st.binary(max_size=2048),
       mode=st.sampled_from(["random", "truncate", "append"]))
def test_damaged_files_raise_only_the_project_error(sources, layout, pick, data, mode):
    def damage(files):
        target = files[pick % len(files)]
        raw = target.read_bytes()
        if mode == "random":
            target.write_bytes(data)
        elif mode == "truncate":
            target.write_bytes(raw[: len(data) % max(len(raw), 1)])
        else:
            target.write_bytes(raw + data)

    _pack_damaged(sources[layout], damage)


@pytest.mark.parametrize("index", range(len(MALFORMED)))
@pytest.mark.parametrize("layout", ["sre2l", "hald"])
def test_malformed_pickles_raise_only_the_project_error(sources, layout, index):
    def damage(files):
        torch.save(MALFORMED[index], [f for f in files if f.suffix == ".tar"][0])

    _pack_damaged(sources[layout], damage)


def test_unknown_layout_and_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelStoreError):
        pack(tmp_path / "empty", tmp_path / "o.h5", progress=False, log=lambda *_: None)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "readme.txt").write_text("not labels")
    with pytest.raises(LabelStoreError):
        pack(tmp_path / "odd", tmp_path / "o.h5", progress=False, log=lambda *_: None)
