"""Schedules (string forms, plans) and label pools (semantics, reproducibility)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from labelstore import LabelStoreError
from loaders import LabelPool, parse_schedule
from loaders.schedules import AllSoft, Alternate, Blend, DriftGated, HALDSplit, Phases, Ratio

FORMS = [
    "soft", "hard", "soft:75,hard:150,soft:75", "hard:10", "hald:hard=0.5", "hald:hard=0.25", "alt:soft=10,hard=10",
    "alt:hard=1,soft=3", "ratio:hard=0.25", "blend:w=0.7", "blend:start=1,end=0,shape=linear",
    "blend:start=0.9,end=0.1,shape=cosine", "soft|drift", "soft:75,hard:150,soft:75|drift:beta=0.5", "hald:hard=auto", "hald:hard=auto|drift",
]


@pytest.mark.parametrize("text", FORMS)
def test_string_forms_round_trip(text):
    s = parse_schedule(text)
    assert str(s) == text
    assert parse_schedule(str(s)) == s


def test_aliases_and_objects():
    assert str(parse_schedule("hald")) == "hald:hard=0.5"
    assert parse_schedule("blend:w=0.123456789") == Blend(0.123456789)  # exact floats survive the round trip
    assert parse_schedule(" soft:2 , hard:3 ") == Phases([("soft", 2), ("hard", 3)])
    assert parse_schedule("alt:soft=2,hard=1") == Alternate([("soft", 2), ("hard", 1)])
    assert parse_schedule("ratio:hard=0.5|drift") == DriftGated(Ratio(0.5))
    assert parse_schedule(AllSoft()) == AllSoft()


def test_hald_split_of_300_epochs():
    assert HALDSplit().phases(300) == [("soft", 75), ("hard", 150), ("soft", 75)]
    for s in (parse_schedule("hald"), parse_schedule("soft:75,hard:150,soft:75")):
        kinds = s.kinds(300)
        assert kinds == ["soft"] * 75 + ["hard"] * 150 + ["soft"] * 75
        assert s.label_epochs(300) == 150
    assert HALDSplit(0.5).phases(7) == [("soft", 1), ("hard", 4), ("soft", 2)]  # round(3.5) = 4 hard


def test_hald_auto_sizes_the_hard_phase_by_stored_epochs():
    auto = parse_schedule("hald:hard=auto")
    assert auto.for_labels(1) == HALDSplit(0.5) and auto.for_labels(2) == HALDSplit(0.25)
    assert auto.for_labels(20).phases(300) == [("soft", 146), ("hard", 8), ("soft", 146)]
    assert auto.for_labels(300).phases(300) == [("soft", 150), ("soft", 150)]  # 0.5 epochs rounds to none
    gated = parse_schedule("hald:hard=auto|drift").for_labels(5)
    assert gated == DriftGated(HALDSplit(0.1)) and str(gated) == "hald:hard=0.1|drift"
    assert parse_schedule("hald:hard=0.3").for_labels(7) == HALDSplit(0.3)  # fixed shares ignore S
    with pytest.raises(LabelStoreError, match="for_labels"):
        auto.kinds(300)  # unresolved: which epochs are hard depends on the label file


def test_alternating_blocks_and_ratio_and_blend():
    assert parse_schedule("alt:soft=2,hard=3").kinds(7) == ["soft"] * 2 + ["hard"] * 3 + ["soft"] * 2
    r = parse_schedule("ratio:hard=0.25")
    kinds = [r.step(0, b, 1).kind for b in range(100)]
    assert kinds.count("hard") == 25 and kinds[:4] == ["soft", "soft", "soft", "hard"]
    assert [parse_schedule("ratio:hard=0.4").step(3, b, 5).kind for b in range(5)].count("hard") == 2
    lin = parse_schedule("blend:start=1,end=0")
    assert [lin.step(e, 0, 5).weight for e in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cos = parse_schedule("blend:start=1,end=0,shape=cosine")
    w = [cos.step(e, 0, 5).weight for e in range(5)]
    assert w[0] == 1.0 and abs(w[2] - 0.5) < 1e-12 and abs(w[4]) < 1e-12 and w[1] > 0.75
    assert parse_schedule("blend:w=0.3").step(9, 2, 10).kind == "blend"


def test_drift_applies_to_label_steps_only():
    s = parse_schedule("soft:1,hard:1|drift:beta=0.5")
    assert s.step(0, 0, 2).drift_beta == 0.5 and s.step(1, 0, 2).drift_beta is None
    assert s.needs_class_labels and not AllSoft().needs_class_labels


@pytest.mark.parametrize("bad", ["", "sometimes", "soft:x", "soft:0", "alt:soft", "ratio:hard=2", "ratio:soft=0.5",
                                 "blend:w=1.5", "blend:start=1", "soft|drift:beta=0", "soft|sometimes", "hald:x=1", "hald:hard=automatic"])
def test_bad_strings_say_what_is_wrong(bad):
    with pytest.raises(LabelStoreError):
        parse_schedule(bad)


def test_phases_must_cover_the_epochs():
    with pytest.raises(LabelStoreError, match="covers 3 epochs but training runs 4"):
        parse_schedule("soft:1,hard:2").kinds(4)


# -- pools ---------------------------------------------------------------------------------
def test_cycle_pool():
    p = LabelPool("cycle")
    for k in range(7):
        np.testing.assert_array_equal(p.assign(k, 5, 3, seed=0), np.stack([np.full(5, k % 3), np.arange(5)], 1))


def test_without_replacement_uses_every_stored_batch_once_per_refill():
    p = LabelPool("without_replacement")
    S, nb = 4, 6  # 24 stored batches, 6 per training epoch: the bag empties every 4 epochs
    rows = np.concatenate([p.assign(k, nb, S, seed=11) for k in range(12)])
    ids = rows[:, 0] * nb + rows[:, 1]
    for r in range(3):
        assert sorted(ids[r * 24 : (r + 1) * 24]) == list(range(24))
    assert not np.array_equal(ids[:24], ids[24:48])  # each refill is a new shuffle
    # nb not dividing the pool: epochs straddle refills and the bag still covers everything
    rows = np.concatenate([LabelPool("without_replacement").assign(k, 5, 2, seed=1) for k in range(6)])
    ids = rows[:, 0] * 5 + rows[:, 1]
    assert sorted(ids[:10]) == sorted(ids[10:20]) == list(range(10))


def test_replacement_draws_are_independent_and_uniform():
    p = LabelPool("replacement")
    rows = np.concatenate([p.assign(k, 50, 4, seed=3) for k in range(200)])
    ids = rows[:, 0] * 50 + rows[:, 1]
    counts = Counter(ids.tolist())
    assert len(counts) == 200 and max(counts.values()) < 2 * 50 * 200 / 200  # all used, none dominant
    one = p.assign(0, 50, 4, seed=3)
    assert len(set(map(tuple, one))) < 50  # with replacement: repeats within an epoch happen


@pytest.mark.parametrize("policy", ["cycle", "replacement", "without_replacement"])
def test_pools_are_reproducible_and_seeded(policy):
    p = LabelPool(policy)
    a = [p.assign(k, 8, 3, seed=5) for k in (0, 9, 4)]
    b = [LabelPool(policy).assign(k, 8, 3, seed=5) for k in (0, 9, 4)]  # random access, any order
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    if policy != "cycle":
        assert not np.array_equal(p.assign(0, 8, 3, seed=5), p.assign(0, 8, 3, seed=6))


def test_unknown_pool():
    with pytest.raises(LabelStoreError, match="without_replacement"):
        LabelPool("sometimes")
