"""Soft-label codecs: round trips, per-codec error bounds, configs, errors, golden files.

Golden files (tests/golden/codecs/) were written once by
``python tests/test_codecs.py --write-golden`` and must keep decoding to the same values.
"""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelstore.codecs import Dense16, DenseQ, LabelCodec, LowRank, TopK, codec_ids, get_codec, parse_codec_spec
from labelstore.fidelity import codec_fidelity, kl_divergence, measure
from labelstore.codecs._topk import top_indices
from labelstore.errors import LabelStoreError

GOLDEN = Path(__file__).parent / "golden" / "codecs"
SPECS = ["dense16", "dense_q:bits=8", "dense_q:bits=6", "dense_q:bits=4", "topk:k=5",
         "topk:k=3,tail_temperature=0", "lowrank:rank=4,k=2", "lowrank:rank=3,k=0"]


def make_logits(seed: int, n: int, c: int, kind: str) -> np.ndarray:
    """Logits of several shapes of trouble: teacher-like, extreme, all-equal rows, heavy ties."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.normal(0, 2, (n, c)) + rng.normal(0, 3, (1, c))
        x[np.arange(n), rng.integers(0, c, n)] += 8
    elif kind == "extreme":
        x = rng.choice([-1e4, 1e4, 0.0, 3.5], size=(n, c)) + rng.normal(0, 1, (n, c))
    elif kind == "equal":
        x = np.repeat(rng.normal(0, 5, (n, 1)), c, axis=1)
    else:  # "ties": few distinct values
        x = rng.integers(-2, 3, (n, c)).astype(np.float64)
    return x.astype(np.float32)


def build(spec: str, c: int, fit_seed: int = 99) -> LabelCodec:
    codec = parse_codec_spec(spec, c)
    if codec.needs_fit:
        codec.fit(make_logits(fit_seed, 64, c, "normal"))
    return codec


def check_bounds(codec: LabelCodec, x: np.ndarray, y: np.ndarray) -> None:
    """The error bound each codec documents (docs/codecs.md)."""
    n, c = x.shape
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    if n == 0:
        return
    if isinstance(codec, Dense16):
        np.testing.assert_array_equal(y, np.clip(x, -65504, 65504).astype(np.float16).astype(np.float32))
    elif isinstance(codec, DenseQ):
        scale = (x.max(1).astype(np.float64) - x.min(1)) / (2**codec.bits - 1)
        slack = 1e-6 * (1 + np.abs(x).max(1))
        assert (np.abs(y - x.astype(np.float64)) <= (scale / 2 + slack)[:, None]).all()
    elif isinstance(codec, TopK):
        k = min(codec.k, c)
        idx = top_indices(x, k)
        rel_x = np.take_along_axis(x, idx, 1).astype(np.float64) - x.max(1, keepdims=True)
        rel_y = np.take_along_axis(y, idx, 1)
        assert (np.abs(rel_y - rel_x) <= codec.step * (1 + 1e-6) + 1e-6 * np.abs(rel_x)).all()
        assert (np.diff(rel_y, axis=1) <= 0).all()  # the stored order decodes in order
        assert (y.max(1) == 0).all() and (np.abs(x[np.arange(n), y.argmax(1)] - x.max(1)) == 0).all()
        if k < c:
            rest = y.copy()
            np.put_along_axis(rest, idx, np.nan, axis=1)
            tail = np.nanmax(rest, axis=1)
            assert (np.nanmin(rest, axis=1) == tail).all() and (tail <= rel_y[:, -1]).all()
    elif isinstance(codec, LowRank):
        k = min(codec.k, c)
        if k == 0:
            return
        idx = top_indices(x, k)
        xc = x.astype(np.float64) - x.mean(1, keepdims=True)
        # top-1 within top_step/2 of its centred value (float32 rounding aside), order exact
        slack = 1e-5 * (1 + np.abs(x).max(1))
        assert (np.abs(y[np.arange(n), idx[:, 0]] - xc[np.arange(n), idx[:, 0]])
                <= codec.top_step / 2 + slack).all()
        assert (x[np.arange(n), y.argmax(1)] == x.max(1)).all()
        kept = np.take_along_axis(y, idx, 1)
        assert (np.diff(kept, axis=1) <= 0).all()
        rest = y.copy()
        np.put_along_axis(rest, idx, -np.inf, axis=1)
        assert (rest.max(1) < kept[:, -1]).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.sampled_from(SPECS), c=st.one_of(st.integers(2, 40), st.integers(41, 21843)),
       n_frac=st.floats(0, 1), kind=st.sampled_from(["normal", "extreme", "equal", "ties"]),
       seed=st.integers(0, 2**31))
def test_round_trip_and_bounds(spec, c, n_frac, kind, seed):
    n = int(n_frac * min(40, 120_000 // c))  # n = 0 and n = 1 included, arrays stay small
    codec = build(spec, c)
    x = make_logits(seed, n, c, kind)
    data = codec.encode(x)
    assert isinstance(data, bytes)
    y = codec.decode(data)
    check_bounds(codec, x, y)
    # the config (and learned arrays) fully describe the decoder
    again = get_codec(json.loads(json.dumps(codec.get_config())), codec.get_arrays())
    assert again == codec
    np.testing.assert_array_equal(again.decode(data), y)


@pytest.mark.parametrize("spec", SPECS)
def test_encode_is_deterministic_and_batch_local(spec):
    codec = build(spec, 100)
    x = make_logits(1, 50, 100, "normal")
    assert codec.encode(x) == codec.encode(x.copy())
    np.testing.assert_allclose(codec.decode(codec.encode(x[:20])), codec.decode(codec.encode(x))[:20],
                               rtol=0, atol=1e-4)


def test_config_through_json_equals_codec():
    for spec in SPECS:
        codec = build(spec, 1000)
        config = json.loads(json.dumps(codec.get_config()))
        assert config["id"] in codec_ids() and config["num_classes"] == 1000
        assert get_codec(config, codec.get_arrays()) == codec
        assert repr(codec).startswith(type(codec).__name__)
        # loaders ship codecs to worker processes
        assert pickle.loads(pickle.dumps(codec)) == codec
    assert parse_codec_spec("topk:k=7,step=0.125", 10) == TopK(10, k=7, step=0.125)
    assert TopK(10, k=7) != TopK(10, k=8)


def test_lowrank_arrays_round_trip_and_fit():
    x = make_logits(3, 300, 200, "normal")
    codec = LowRank(200, rank=8, k=1).fit(x)
    arrays = codec.get_arrays()
    assert arrays["basis"].shape == (8, 200) and arrays["mean"].shape == (200,)
    basis = arrays["basis"].astype(np.float64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(8), atol=1e-5)  # orthonormal directions
    rebuilt = LowRank.from_config(codec.get_config(), {k: v.copy() for k, v in arrays.items()})
    assert rebuilt == codec
    data = codec.encode(x)
    np.testing.assert_array_equal(rebuilt.decode(data), codec.decode(data))
    assert LowRank(200, rank=8, k=1).fit(x) == codec  # fitting is deterministic
    # the learned basis must beat a constant fill on data like its sample
    y = LowRank(200, rank=8, k=0).fit(x).decode(LowRank(200, rank=8, k=0).fit(x).encode(x))
    xc = x - x.mean(1, keepdims=True)
    assert ((y - xc) ** 2).mean() < 0.5 * (xc**2).mean()


def test_lowrank_randomized_fit_matches_the_exact_one(monkeypatch):
    from labelstore.codecs import lowrank

    rng = np.random.default_rng(4)  # logits-like: a decaying spectrum over 40 directions, plus noise
    x = (rng.standard_normal((600, 40)) * np.linspace(5, 0.2, 40)) @ rng.standard_normal((40, 300))
    x += 0.05 * rng.standard_normal(x.shape)
    x -= x.mean(0)
    exact = lowrank._leading_directions(x, 8)
    monkeypatch.setattr(lowrank, "_EXACT_LIMIT", 16)  # what large samples of many classes take
    fast = lowrank._leading_directions(x, 8)
    np.testing.assert_allclose(fast @ fast.T, np.eye(8), atol=1e-8)
    captured = [np.linalg.norm(x @ b.T) ** 2 for b in (fast, exact)]
    assert captured[0] >= 0.9999 * captured[1]  # the same leading subspace, up to rotation
    assert np.array_equal(fast, lowrank._leading_directions(x, 8))  # seeded: refits are identical


def test_user_errors_raise_labelstore_error():
    codec = TopK(10)
    for bad in (np.full((2, 10), np.nan, np.float32), np.full((2, 10), np.inf, np.float32),
                np.zeros((2, 11), np.float32), np.zeros(10, np.float32), np.zeros((2, 10, 1))):
        for c in (codec, Dense16(10), DenseQ(10, bits=4), build("lowrank:rank=2", 10)):
            with pytest.raises(LabelStoreError):
                c.encode(bad)
    with pytest.raises(LabelStoreError, match="not fitted"):
        LowRank(10).encode(np.zeros((1, 10), np.float32))
    with pytest.raises(LabelStoreError):
        DenseQ(10, bits=5)
    with pytest.raises(LabelStoreError):
        TopK(10, k=0)
    with pytest.raises(LabelStoreError):
        parse_codec_spec("topk:bits=8", 10)  # a parameter topk does not take
    with pytest.raises(LabelStoreError):
        get_codec({"id": "nope", "num_classes": 10})
    with pytest.raises(LabelStoreError):
        LowRank(10, rank=2)._set_arrays({"mean": np.zeros(10), "basis": np.zeros((3, 10))})
    # a chunk decoded by the wrong codec, or with the wrong class count, is refused
    data = TopK(10).encode(make_logits(0, 4, 10, "normal"))
    for other in (Dense16(10), TopK(11), DenseQ(10)):
        with pytest.raises(LabelStoreError):
            other.decode(data)


EVERY_CODEC = ("dense16:level=3", "dense_q:bits=8,level=3", "lowrank:rank=16,step=0.5,k=1,top_step=0.03125,level=3",
               "topk:k=10,step=0.03125,tail_temperature=20.0,level=3")


@pytest.mark.parametrize("spec, want", [
    ("topk:k=1O", ["topk: k must be an integer, got '1O'", "tail_temperature (number, default 20.0)"]),
    ("topq:k=10", ["unknown codec 'topq' (did you mean topk?)", *EVERY_CODEC]),
    ("topk=10", ["'topk=10' has no codec id before its parameters", "e.g. topk:k=10", *EVERY_CODEC]),
    ("", ["empty codec spec", *EVERY_CODEC]),
    ("topk:kk=10", ["topk has no parameter 'kk' (did you mean k?)", "k (integer, default 10)"]),
    ("dense16:bits=8", ["dense16 has no parameter 'bits'", "level (integer, default 3)"]),
    ("topk:", ["ends in ':'"]),
    ("topk:k", ["bad codec parameter 'k'", "key=value"]),
    ("topk:k=3,k=4", ["gives k twice"]),
    ("topk:num_classes=3", ["sets num_classes"]),
    ("topk:k=0", ["k must be at least 1, got 0"]),
    ("topk:k=2.5", ["k must be an integer, got 2.5"]),
    ("topk:k=true", ["k must be an integer, got True"]),
    ("topk:step=0", ["step must be > 0", "step=0"]),
    ("topk:step=nan", ["step must be a finite number, got nan"]),
    ("topk:tail_temperature=-1", ["tail_temperature >= 0"]),
    ("topk:tail_temperature=inf", ["tail_temperature must be a finite number"]),
    ("dense_q:bits=5", ["bits must be 4, 6 or 8, got 5"]),
    ("dense_q:bits=8.0", ["bits must be an integer, got 8.0"]),
    ("dense16:level=23", ["level is the zstd level", "..22", "got 23"]),
    ("dense_q:level=fast", ["level must be an integer, got 'fast'"]),
    ("lowrank:rank=0", ["rank >= 1", "rank=0"]),
    ("lowrank:k=-1", ["k >= 0", "k=-1"]),
    ("lowrank:top_step=0", ["must be > 0"]),
    ("lowrank:step=inf", ["step must be a finite number"]),
])
def test_bad_codec_specs_say_what_the_codecs_take(spec, want):
    with pytest.raises(LabelStoreError) as exc:
        parse_codec_spec(spec, 10)
    for w in want:
        assert w in str(exc.value)


def test_constructors_and_configs_check_their_parameters():
    # the same checks guard the Python constructors and the configs read from files
    for make in (lambda: TopK(10, k="10"), lambda: TopK(10, kk=3), lambda: TopK(), lambda: TopK(1),
                 lambda: TopK(10.5), lambda: DenseQ(10, bits=np.float64(8)), lambda: Dense16(10, 3, 4),
                 lambda: LowRank(10, rank=None), lambda: get_codec({"id": "topk", "num_classes": 10, "kk": 1}),
                 lambda: get_codec({"id": "dense_q", "num_classes": "10"})):
        with pytest.raises(LabelStoreError, match="codec|num_classes"):
            make()
    # numpy scalars are numbers like any other (configs may carry them)
    assert TopK(np.int64(10), k=np.int32(3), step=np.float32(0.5)).get_config()["k"] == 3
    assert parse_codec_spec("topk:k=5,", 10) == TopK(10, k=5)  # a trailing comma is harmless
    assert parse_codec_spec(" dense_q : bits = 4 ", 10) == DenseQ(10, bits=4)


def test_known_codecs_come_from_the_classes(monkeypatch):
    """A codec registered later is listed with its parameters and checked like the built-in ones."""
    from labelstore.codecs import registry

    class Sketch(LabelCodec):
        codec_id = "sketch"

        def __init__(self, num_classes: int, width: int = 64, decay: float = 0.5, level: int = 3):
            super().__init__(num_classes)
            self.width, self.decay, self.level = width, decay, level

    monkeypatch.setitem(registry._REGISTRY, "sketch", Sketch)
    with pytest.raises(LabelStoreError, match="sketch:width=64,decay=0.5,level=3"):
        parse_codec_spec("skech", 10)
    with pytest.raises(LabelStoreError, match="sketch: width must be an integer, got 'wide'"):
        parse_codec_spec("sketch:width=wide", 10)
    with pytest.raises(LabelStoreError, match="sketch has no parameter 'depth'"):
        Sketch(10, depth=2)
    assert parse_codec_spec("sketch:decay=1", 10).decay == 1


def test_docs_list_every_codec_with_its_defaults():
    from labelstore.codecs import registry

    docs = (Path(__file__).parents[1] / "docs" / "codecs.md").read_text()
    for cid in codec_ids():
        assert f"`{registry._REGISTRY[cid].describe()}`" in docs, cid


@pytest.mark.parametrize("spec", SPECS)
def test_corrupt_and_truncated_bytes_raise_labelstore_error(spec):
    codec = build(spec, 50)
    x = make_logits(5, 16, 50, "normal")
    data = codec.encode(x)
    good = codec.decode(data)
    for cut in sorted({0, 1, 4, len(data) // 2, len(data) - 1}):
        with pytest.raises(LabelStoreError):
            codec.decode(data[:cut])
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, len(data), 40):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            out = codec.decode(bytes(flipped))
        except LabelStoreError:
            continue
        np.testing.assert_array_equal(out, good)  # never silently different labels
    with pytest.raises(LabelStoreError):
        codec.decode(data + b"\x00")
    with pytest.raises(LabelStoreError):
        codec.decode(b"not a zstd frame at all")


def test_golden_files_still_decode():
    configs = sorted(GOLDEN.glob("*.json"))
    assert len(configs) == len(SPECS), "golden files missing: run tests/test_codecs.py --write-golden"
    for path in configs:
        config = json.loads(path.read_text())
        arrays_path = path.with_suffix(".arrays.npz")
        arrays = dict(np.load(arrays_path)) if arrays_path.exists() else None
        codec = get_codec(config, arrays)
        out = codec.decode(path.with_suffix(".bin").read_bytes())
        expected = np.load(path.with_suffix(".npy"))
        if codec.needs_fit:  # a matrix product: allow BLAS rounding differences only
            np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)
        else:
            np.testing.assert_array_equal(out, expected)


def test_fidelity_metrics():
    x = make_logits(7, 30, 12, "normal")
    same = measure(x, x + np.float32(3.0))  # a constant shift per record changes nothing
    assert same.kl_t20 < 1e-12 and same.top1 == 1.0 and same.top5 == 1.0
    # KL(p || q) for p = (1/2, 1/2), q = (1/4, 3/4) at T=1
    got = kl_divergence(np.array([[0.0, 0.0]]), np.array([[0.0, np.log(3.0)]]), 1.0)
    assert abs(got[0] - (0.5 * np.log(2) + 0.5 * np.log(2 / 3))) < 1e-12
    m, nbytes = codec_fidelity(TopK(12, k=2), x, batch_size=8)
    assert m.top1 == 1.0 and 0 < m.kl_t20 < 1 and nbytes > 0


def write_golden() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    x = make_logits(2024, 6, 40, "normal")
    x[5] = x[5, 0]  # one all-equal row
    for spec in SPECS:
        codec = build(spec, 40)
        name = spec.replace(":", "_").replace("=", "").replace(",", "_")
        data = codec.encode(x)
        (GOLDEN / f"{name}.bin").write_bytes(data)
        (GOLDEN / f"{name}.json").write_text(json.dumps(codec.get_config(), sort_keys=True) + "\n")
        np.save(GOLDEN / f"{name}.npy", codec.decode(data))
        if codec.get_arrays():
            np.savez(GOLDEN / f"{name}.arrays.npz", **codec.get_arrays())


if __name__ == "__main__" and "--write-golden" in sys.argv:
    write_golden()
