"""export --to sre2l: pack -> export -> pack preserves every field within the codec's precision."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures_prior_art import write_hald, write_sre2l
from labelstore import LabelFile, LabelStoreError
from labelstore.cli import main as cli_main
from labelstore.pack import pack


def same_records(a, b, logits_atol=0.0):
    with LabelFile(a) as f, LabelFile(b) as g:
        assert (f.num_epochs, f.num_images, f.num_classes) == (g.num_epochs, g.num_images, g.num_classes)
        for e in range(f.num_epochs):
            np.testing.assert_array_equal(f.order(e), g.order(e))
            for k in range(f.num_batches(e)):
                x, y = f[e, k], g[e, k]
                np.testing.assert_array_equal(x.indices, y.indices)
                np.testing.assert_array_equal(x.boxes, y.boxes)
                np.testing.assert_array_equal(x.flips, y.flips)
                np.testing.assert_allclose(x.logits, y.logits, atol=logits_atol, rtol=0)
                assert x.mix == y.mix


def test_round_trip_dense16_exact(tmp_path):
    write_sre2l(tmp_path / "s", num_images=40, epochs=2, batch_size=16)
    pack(tmp_path / "s", tmp_path / "a.h5", progress=False)
    assert cli_main(["export", str(tmp_path / "a.h5"), "--to", "sre2l", str(tmp_path / "out"), "--quiet"]) == 0
    first = torch.load(tmp_path / "out" / "epoch_1" / "batch_0.tar", weights_only=True)
    assert [type(x).__name__ for x in first] == ["Tensor", "Tensor", "Tensor", "float", "list", "Tensor"]
    assert first[0].dtype == torch.float32 and first[1].dtype == torch.bool and first[2].dtype == torch.int64
    assert first[5].dtype == torch.float16 and first[5].shape == (16, 10)
    pack(tmp_path / "out", tmp_path / "b.h5", progress=False)  # detected as LPLD: the json carries the orders
    same_records(tmp_path / "a.h5", tmp_path / "b.h5")
    # the original files and the exported ones hold the same logits bit for bit
    orig = torch.load(tmp_path / "s" / "epoch_1" / "batch_0.tar", weights_only=False)
    assert torch.equal(orig[5], first[5]) and torch.equal(orig[1], first[1]) and torch.equal(orig[2], first[2])
    assert [int(v) for v in orig[4]] == first[4]


def test_round_trip_lossy_codec_within_precision(tmp_path):
    write_hald(tmp_path / "h", num_images=30, epochs=2, batch_size=8, image_size=(32, 32))
    pack(tmp_path / "h", tmp_path / "a.h5", progress=False, image_size=(32, 32), codec="dense_q:bits=8")
    cli_main(["export", str(tmp_path / "a.h5"), "--to", "sre2l", str(tmp_path / "out"), "--quiet"])
    pack(tmp_path / "out", tmp_path / "b.h5", progress=False, image_size=(32, 32), codec="dense_q:bits=8")
    with LabelFile(tmp_path / "a.h5") as f:
        z = f[0, 0].logits
    step = float((z.max(1) - z.min(1)).max()) / 255
    same_records(tmp_path / "a.h5", tmp_path / "b.h5", logits_atol=step + 0.05)  # one quantisation step + fp16


def test_export_refuses_non_empty_dir(tmp_path):
    write_sre2l(tmp_path / "s", num_images=10, epochs=1, batch_size=5)
    pack(tmp_path / "s", tmp_path / "a.h5", progress=False, num_images=10)
    with pytest.raises(LabelStoreError, match="not empty"):
        from labelstore.export import export_sre2l

        export_sre2l(tmp_path / "a.h5", tmp_path / "s", progress=False)
