"""Label correction (`|correct`), HALD's hard batches and per-phase pool, KL without T^2, and the
student recipes of `distill train` (`--recipe hald | sre2l | cvdd`)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distill.optim import param_groups
from distill.recipes import RECIPES, get_recipe, lr_at
from distill.train import TrainConfig, resolve_recipe
from labelstore import LabelStoreError, MixPolicy
from loaders import ReplayLoader, TorchBackend, parse_schedule
from loaders.correct import correct_logits
from loaders.pairs import StepTargets
from loaders.pools import LabelPool

from test_loaders_replay import MEAN, STD, photo_crops, relabel


@pytest.fixture(scope="module")
def fixed():
    return photo_crops(30, variable=False)


# -- the functional core -----------------------------------------------------------------------
def test_correct_swap_and_raise_move_only_the_wrong_rows():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 4.0, 2.0]])
    y = torch.tensor([0, 1, 1])  # row 0 right, row 1 wrong (top 2), row 2 right
    out, wrong = correct_logits(z, y, mode="swap")
    assert wrong.tolist() == [False, True, False]
    assert out.tolist() == [[3.0, 1.0, 0.0], [0.0, 5.0, 2.0], [1.0, 4.0, 2.0]]
    out, _ = correct_logits(z, y, mode="raise")
    assert out[1, 1] > 5.0 and out[1, 1] - 5.0 < 1e-5 and out[1, [0, 2]].tolist() == [0.0, 5.0]
    assert (out.argmax(1) == y).all()
    out, _ = correct_logits(z, y, mode="raise", margin=0.5)
    assert out[1, 1] == 5.5


def test_correct_in_a_mixed_batch_accepts_either_class_and_promotes_the_larger_part():
    z = torch.tensor([[0.0, 5.0, 1.0, 0.0], [0.0, 0.0, 1.0, 5.0]])
    y, partner = torch.tensor([0, 2]), torch.tensor([1, 0])  # row 0's top-1 is its partner's class: right
    out, wrong = correct_logits(z, y, partner_labels=partner, lam=0.7)
    assert wrong.tolist() == [False, True] and out[1].argmax() == 2  # own image is the larger part
    out, wrong = correct_logits(z, y, partner_labels=partner, lam=0.3)
    assert out[1].argmax() == 0  # the partner's image is the larger part


def test_correct_refuses_unknown_modes_and_the_drift_combination():
    with pytest.raises(LabelStoreError, match="swap"):
        correct_logits(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), mode="clip")
    for text in ("soft|drift|correct", "soft|correct|drift"):
        with pytest.raises(LabelStoreError, match="not both"):
            parse_schedule(text)
    s = parse_schedule("hald:hard=auto|correct:mode=raise,margin=0.25").for_labels(2)
    assert str(s) == "hald:hard=0.25|correct:mode=raise,margin=0.25" and parse_schedule(str(s)) == s


# -- the loader ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mix", [MixPolicy(), MixPolicy("cutmix")])
def test_corrected_steps_rank_the_class_first_and_keep_the_rest(tmp_path, fixed, mix):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1, mix=mix)  # a random teacher: many top-1s are wrong
    plain = list(ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, mean=MEAN, std=STD))
    fixed_steps = list(ReplayLoader(tmp_path / "l.h5", backend, "soft|correct", epochs=1, mean=MEAN, std=STD))
    n_wrong = 0
    for a, b in zip(plain, fixed_steps):
        y = torch.as_tensor(labels[a.indices])
        if a.mix is None:
            want = a.logits.argmax(1) != y
            assert (b.logits.argmax(1) == y).all()
        else:
            partner = y[torch.as_tensor(a.mix.partner)]
            want = (a.logits.argmax(1) != y) & (a.logits.argmax(1) != partner)
        np.testing.assert_array_equal(b.corrected.numpy(), want.numpy())
        torch.testing.assert_close(b.logits[~want], a.logits[~want])  # right rows untouched
        # swap: every wrong row holds the same values, two of them exchanged
        torch.testing.assert_close(b.logits[want].sort(1).values, a.logits[want].sort(1).values)
        n_wrong += int(want.sum())
    assert 0 < n_wrong < 30


def test_hald_hard_epochs_are_a_full_pass_in_their_own_batch_size(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=2, batch_size=8)
    ld = ReplayLoader(tmp_path / "l.h5", backend, "hald", epochs=8, mean=MEAN, std=STD, pool="without_replacement",
                      hard_batch_size=16)
    kinds = parse_schedule("hald").kinds(8)
    assert kinds == ["soft", "soft", "hard", "hard", "hard", "hard", "soft", "soft"]
    steps = 0
    for e in range(8):
        ld.set_epoch(e)
        got = list(ld)
        steps += len(got)
        sizes = [len(s) for s in got]
        if kinds[e] == "hard":
            assert sizes == [16, 14] and sorted(np.concatenate([s.indices for s in got]).tolist()) == list(range(30))
        else:
            assert sorted(sizes) == [6, 8, 8, 8]  # stored batches, drawn from the pool in any order
    assert steps == ld.total_steps() == 4 * 4 + 4 * 2
    with pytest.raises(LabelStoreError, match="hard_batch_size"):
        ReplayLoader(tmp_path / "l.h5", backend, "hald", epochs=8, mean=MEAN, std=STD, pool="cycle", hard_batch_size=0)


def test_per_phase_pool_starts_a_fresh_bag_at_every_soft_phase(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=2, batch_size=10)  # P = 2 x 3 stored batches
    sched = "soft:3,hard:2,soft:3"
    ld = ReplayLoader(tmp_path / "l.h5", backend, sched, epochs=8, mean=MEAN, std=STD,
                      pool="without_replacement_per_phase")
    plans = {e: [it.stored for it in ld.plan(e)] for e in range(8)}
    for first in (0, 5):  # each phase's first two epochs draw all six stored batches once
        assert sorted(plans[first] + plans[first + 1]) == [(e, b) for e in range(2) for b in range(3)]
    assert plans[0] + plans[1] != plans[5] + plans[6]  # a bag per phase, seeded by the phase
    cont = ReplayLoader(tmp_path / "l.h5", backend, sched, epochs=8, mean=MEAN, std=STD, pool="without_replacement")
    # the continuous bag carries epoch 2's half-used bag over into the second phase
    assert [it.stored for it in cont.plan(5)] == [tuple(r) for r in LabelPool("without_replacement").assign(
        3, 3, 2, cont.seed)]


def test_kl_without_t_squared_is_torchs_kldivloss_batchmean(tmp_path, fixed):
    images, labels = fixed
    backend = TorchBackend(images, labels)
    relabel(tmp_path / "l.h5", backend, epochs=1, mix=MixPolicy())
    T = 20.0
    ld = ReplayLoader(tmp_path / "l.h5", backend, "soft", epochs=1, mean=MEAN, std=STD, temperature=T,
                      kd_t_squared=False)
    step = next(iter(ld))
    s = torch.randn(len(step), 6)
    want = torch.nn.KLDivLoss(reduction="batchmean")(torch.log_softmax(s / T, 1), torch.softmax(step.logits / T, 1))
    torch.testing.assert_close(step.loss(s), want)
    torch.testing.assert_close(StepTargets.from_step(step).loss(s), want)


# -- the recipes -----------------------------------------------------------------------------------
def test_hald_recipe_is_read_from_its_script_and_explicit_settings_win():
    cfg, r = resolve_recipe(TrainConfig(recipe="hald"))
    assert (cfg.temperature, cfg.label_smoothing, cfg.hard_batch_size, cfg.hard_mix, cfg.pool) == (
        20.0, 0.8, 16, "cutmix", "without_replacement_per_phase")
    assert not r.kd_t_squared and not r.decay_1d and r.lr_per == "epoch" and r.lr_eta == 2.0
    cfg, r = resolve_recipe(TrainConfig(recipe="hald", temperature=4.0))
    assert cfg.temperature == r.temperature == 4.0 and cfg.label_smoothing == 0.8
    default, _ = resolve_recipe(TrainConfig())
    assert (default.temperature, default.label_smoothing, default.pool) == (4.0, 0.1, "without_replacement")
    with pytest.raises(LabelStoreError, match="labelstore, hald, sre2l, cvdd"):
        get_recipe("fkd")


def test_recipe_learning_rates_follow_lambdalr_stepped_per_epoch():
    """HALD's LambdaLR(0.5 (1 + cos(pi e / E / eta))) stepped once an epoch, rebuilt with torch."""
    E = 12
    for name in ("hald", "sre2l", "cvdd"):
        r = RECIPES[name]
        opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1 + math.cos(math.pi * e / E / r.lr_eta)))
        for e in range(E):
            for step in (e * 5, e * 5 + 4):  # constant within an epoch
                assert lr_at(r, 1e-3, e, E, step, E * 5) == pytest.approx(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    r = RECIPES["labelstore"]
    assert lr_at(r, 1e-3, 0, E, 30, 60) == pytest.approx(0.5e-3) and lr_at(r, 1e-3, 11, E, 60, 60) == 0


def test_param_groups_exempt_biases_and_norms_as_the_papers_do():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4, 2))
    decay, rest = param_groups(net, 0.01, decay_1d=False)
    assert [p.shape for p in decay["params"]] == [(4, 1, 3, 3), (2, 4)] and rest["weight_decay"] == 0.0
    assert len(rest["params"]) == 4  # conv bias, BN weight and bias, linear bias
    assert len(param_groups(net, 0.01)[0]["params"]) == 6


def test_distill_train_records_the_recipe_it_ran(tmp_path, fixed):
    from distill.data import ImageDataset, fashion_mnist, save_npz
    from distill.relabel import RelabelConfig, relabel as distill_relabel
    from distill.squeeze import SqueezeConfig, squeeze
    from distill.train import train

    t = squeeze(SqueezeConfig(out_dir=str(tmp_path / "t"), models=["convnet-w16"], epochs=1, batch_size=64,
                              max_steps=5, train_subset=500, test_subset=100, threads=2), progress=False)
    ds = fashion_mnist("train").subset(20, seed=0)
    images = str(save_npz(tmp_path / "images.npz", ImageDataset(ds.images, ds.labels, 10, "fm")))
    lab = distill_relabel(RelabelConfig(images=images, teachers=[str(t[0])], out=str(tmp_path / "l.h5"), epochs=1,
                                        batch_size=10, threads=2), progress=False)
    res = train(TrainConfig(images=images, labels=str(lab["labels"]), out_dir=str(tmp_path / "s"), model="convnet-w16",
                            schedule="hald|correct", recipe="hald", epochs=4, test_subset=100, threads=2),
                progress=False)
    rec = json.loads((tmp_path / "s" / "student.config.json").read_text())
    assert rec["config"]["recipe"] == "hald" and rec["config"]["temperature"] == 20.0
    assert rec["recipe_settings"]["kd_t_squared"] is False and rec["recipe_settings"]["hard_batch_size"] == 16
    import csv

    rows = list(csv.DictReader(open(res["metrics"])))
    assert [int(r["steps"]) for r in rows] == [2, 4, 6, 8]  # soft: 2 batches of 10; hard: 20 images in 16 + 4
    assert [r["lr"] for r in rows][:1] == ["0.001"] and float(rows[-1]["lr"]) == pytest.approx(
        1e-3 * 0.5 * (1 + math.cos(math.pi * 3 / 8)))
    assert 0 <= float(rows[0]["corrected"]) <= 1 and rows[1]["corrected"] == ""  # soft epochs only


def test_recipe_specs_change_named_settings_for_ablations():
    r = get_recipe("hald:kd_t_squared=true,label_smoothing=0.1,hard_batch_size=none")
    assert (r.kd_t_squared, r.label_smoothing, r.hard_batch_size, r.temperature) == (True, 0.1, None, 20.0)
    cfg, run = resolve_recipe(TrainConfig(recipe="hald:hard_batch_size=20"))
    assert cfg.hard_batch_size == 20 and run.name == "hald:hard_batch_size=20"
    for bad, msg in (("hald:foo=1", "key=value"), ("hald:kd_t_squared=yes", "not a bool"),
                     ("hald:lr_per=week", "lr_per"), ("hald:label_smoothing=1", r"\[0, 1\)")):
        with pytest.raises(LabelStoreError, match=msg):
            get_recipe(bad)
