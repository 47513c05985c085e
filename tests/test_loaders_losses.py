"""Losses against hand-computed values; mixing of pixels and targets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labelstore import LabelStoreError, Mix
from loaders import kd_loss, soft_cross_entropy
from loaders.mixing import apply_mix, mix_targets, to_model_input
from loaders.losses import smooth_one_hot


def test_kd_loss_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    T = 2.0

    def sm(a, b):
        e = math.exp(a - b)
        return e / (1 + e), 1 / (1 + e)

    want = 0.0
    for (s0, s1), (t0, t1) in zip(s.tolist(), t.tolist()):
        p = sm(t0 / T, t1 / T)
        q = sm(s0 / T, s1 / T)
        want += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    want = want / 2 * T * T
    assert kd_loss(s, t, temperature=T).item() == pytest.approx(want, rel=1e-6)
    p = torch.softmax(t / T, 1)
    assert kd_loss(s, teacher_probs=p, temperature=T).item() == pytest.approx(want, rel=1e-5)
    per = kd_loss(s, t, temperature=T, reduction="none")
    assert per.shape == (2,) and per.mean().item() == pytest.approx(want, rel=1e-6)
    # identical distributions: zero; matches torch's own KLDivLoss
    assert kd_loss(t, t, temperature=T).item() == pytest.approx(0.0, abs=1e-7)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / T, 1), p, reduction="batchmean") * T * T
    assert kd_loss(s, t, temperature=T).item() == pytest.approx(ref.item(), rel=1e-6)


def test_kd_loss_handles_zero_probabilities_and_gradients():
    s = torch.zeros(1, 3, requires_grad=True)
    p = torch.tensor([[1.0, 0.0, 0.0]])
    loss = kd_loss(s, teacher_probs=p, temperature=1.0)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(s.grad, torch.tensor([[1 / 3 - 1, 1 / 3, 1 / 3]]))
    with pytest.raises(LabelStoreError):
        kd_loss(s, temperature=0.0, teacher_probs=p)


def test_soft_cross_entropy_and_smoothing_by_hand():
    y = smooth_one_hot(torch.tensor([2, 0]), 4, 0.2)
    torch.testing.assert_close(y, torch.tensor([[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]))
    s = torch.tensor([[0.0, 0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0, 0.0]])
    # row 0: softmax = [1,1,2,1]/5; row 1: uniform 1/4
    want = (-(0.15 * math.log(1 / 5) + 0.85 * math.log(2 / 5)) + math.log(4)) / 2
    assert soft_cross_entropy(s, y).item() == pytest.approx(want, rel=1e-6)
    hard = smooth_one_hot(torch.tensor([2, 0]), 4, 0.0)
    ref = torch.nn.functional.cross_entropy(s, torch.tensor([2, 0]))
    assert soft_cross_entropy(s, hard).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(LabelStoreError):
        smooth_one_hot(torch.tensor([0]), 2, 1.0)


def test_cutmix_pastes_the_partners_box_exactly():
    x = torch.arange(3 * 1 * 4 * 5, dtype=torch.uint8).reshape(3, 1, 4, 5)
    m = Mix("cutmix", np.array([2, 0, 1]), 0.7, np.array([1, 2, 3, 4], np.int32))
    out = apply_mix(x, m)
    assert out.dtype == torch.uint8
    want = x.clone()
    want[0, :, 1:3, 2:4] = x[2, :, 1:3, 2:4]
    want[1, :, 1:3, 2:4] = x[0, :, 1:3, 2:4]
    want[2, :, 1:3, 2:4] = x[1, :, 1:3, 2:4]
    assert torch.equal(out, want) and torch.equal(x, torch.arange(60, dtype=torch.uint8).reshape(3, 1, 4, 5))
    with pytest.raises(LabelStoreError, match="outside"):
        apply_mix(x, Mix("cutmix", np.array([2, 0, 1]), 0.7, np.array([0, 0, 9, 9], np.int32)))
    with pytest.raises(LabelStoreError, match="batch of 2"):
        apply_mix(x, Mix("cutmix", np.array([1, 0]), 0.7, np.array([0, 0, 1, 1], np.int32)))


def test_mixup_and_target_mixing():
    x = torch.tensor([[[[10]]], [[[20]]]], dtype=torch.uint8)
    out = apply_mix(x, Mix("mixup", np.array([1, 0]), 0.25))
    torch.testing.assert_close(out.flatten(), torch.tensor([17.5, 12.5]))
    y = torch.eye(3)[[0, 2]]
    torch.testing.assert_close(mix_targets(y, Mix("mixup", np.array([1, 0]), 0.25)),
                               torch.tensor([[0.25, 0.0, 0.75], [0.75, 0.0, 0.25]]))
    assert mix_targets(y, None) is y and apply_mix(x, None) is x


def test_to_model_input_normalises_and_keeps_one_gray_channel():
    px = torch.full((2, 3, 2, 2), 51, dtype=torch.uint8)
    out = to_model_input(px, None, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(out[:, :, 0, 0], torch.tensor([[0.2, 0.0, -0.2]] * 2))
    g = to_model_input(px, None, mean=0.2, std=0.5, gray=True, dtype=torch.float16)
    assert g.shape == (2, 1, 2, 2) and g.dtype == torch.float16
    with pytest.raises(LabelStoreError):
        to_model_input(px, None, mean=(0.1, 0.2), std=(1, 1, 1))
