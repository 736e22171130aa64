"""Cross and Learn's loss against hand-computed values (orthogonal, identical, opposite and zero
vectors), its ablation weights, and SGD lowering it."""
from __future__ import annotations

import math

import pytest
import torch

from raysup.losses import cal_distance, cross_and_learn_loss

EPS = 1e-5


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_distance_hand_computed():
    a = t([[1.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    b = t([[0.0, 2.0], [3.0, 4.0], [-2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    expected = [
        1.0,  # orthogonal
        1 - 25 / (25 + EPS),  # identical: ε inside the norms keeps it just above 0
        1 + 2 / (math.sqrt(1 + EPS) * math.sqrt(4 + EPS)),  # opposite: ≈ 2
        1.0,  # zero vectors: no NaN, distance 1
        1.0,
    ]
    got = cal_distance(a, b, eps=EPS)
    assert got.shape == (5,)
    torch.testing.assert_close(got, t(expected), rtol=1e-12, atol=1e-12)


def test_zero_vectors_have_finite_gradients():
    f = torch.zeros(2, 3, requires_grad=True)
    g = torch.zeros(2, 3, requires_grad=True)
    loss = cross_and_learn_loss(f, g, f * 1, g * 1)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(1.0 - 1.0)  # L_cross 1, L_div 1
    assert torch.isfinite(f.grad).all() and torch.isfinite(g.grad).all()


def test_loss_hand_computed_and_ablation_weights():
    # one tuple: pair i identical (3,4)/(3,4); pair j opposite (0,2)/(0,−1); across pairs
    # f_i ⊥ f_j and g_i ⊥ g_j
    f_i, g_i, f_j, g_j = t([[3.0, 4.0]]), t([[3.0, 4.0]]), t([[0.0, 2.0]]), t([[-4.0, 0.0]])
    d_ii = 1 - 25 / (25 + EPS)
    d_jj = 1.0  # (0,2) ⊥ (−4,0)
    d_f = 1 - 8 / (math.sqrt(25 + EPS) * math.sqrt(4 + EPS))  # (3,4)·(0,2) = 8
    d_g = 1 + 12 / (math.sqrt(25 + EPS) * math.sqrt(16 + EPS))  # (3,4)·(−4,0) = −12
    cross, div = 0.5 * (d_ii + d_jj), 0.5 * (d_f + d_g)
    for w, cw in [(1.0, 1.0), (0.5, 1.0), (0.0, 1.0), (2.0, 0.0)]:
        got = cross_and_learn_loss(f_i, g_i, f_j, g_j, div_weight=w, cross_weight=cw, eps=EPS)
        assert got.shape == ()
        assert got.item() == pytest.approx(cw * cross - w * div, rel=1e-12)


def test_mean_over_tuples_and_half_precision():
    torch.manual_seed(0)
    f_i, g_i, f_j, g_j = (torch.randn(6, 8) for _ in range(4))
    per_tuple = [cross_and_learn_loss(f_i[b : b + 1], g_i[b : b + 1], f_j[b : b + 1], g_j[b : b + 1]) for b in range(6)]
    torch.testing.assert_close(cross_and_learn_loss(f_i, g_i, f_j, g_j), torch.stack(per_tuple).mean())
    half = cross_and_learn_loss(f_i.half(), g_i.half(), f_j.half(), g_j.half())
    assert half.dtype == torch.float32 and half.item() == pytest.approx(cross_and_learn_loss(f_i, g_i, f_j, g_j).item(), abs=1e-2)


@pytest.mark.parametrize("div_weight, cross_weight", [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_sgd_lowers_the_loss(div_weight, cross_weight):
    torch.manual_seed(0)
    feats = [torch.randn(16, 32, requires_grad=True) for _ in range(4)]
    opt = torch.optim.SGD(feats, lr=10.0)  # the mean over 16 tuples and |x| ≈ 5.7 make gradients small

    def loss():
        return cross_and_learn_loss(*feats, div_weight=div_weight, cross_weight=cross_weight)

    start = loss().item()
    for _ in range(100):
        opt.zero_grad()
        loss().backward()
        opt.step()
    # the minimum is −div_weight·2 (L_div at most 2) + cross_weight·0
    assert loss().item() < start - 0.5
    assert loss().item() < -div_weight * 1.8 + cross_weight * 0.1
