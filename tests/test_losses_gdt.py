"""GDT's cross-modal NCE loss against hand-computed values, its closed form, and SGD."""
from __future__ import annotations

import math

import pytest
import torch

from raysup.losses import cross_modal_logits, gdt_nce_loss, gdt_reid_top1


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def hand_example():
    """One clip, 2-D embeddings. Normalised: v = (0.6, 0.8), a_k = (1, 0), audio negative (0, 1);
    a_q = (0, −1), v_k = (1, 1)/√2, video negatives (1, 0) and (0, −1)."""
    return dict(
        video_q=t([[3.0, 4.0]]),
        audio_k=t([[2.0, 0.0]]),
        audio_q=t([[0.0, -1.0]]),
        video_k=t([[1.0, 1.0]]),
        audio_negatives=t([[0.0, 2.0]]),
        video_negatives=t([[5.0, 0.0], [0.0, -5.0]]),
    )


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_hand_computed_two_d(tau):
    # video → audio: positive ⟨v, a⟩ = 0.6, negative ⟨v, n⟩ = 0.8
    loss_v = -math.log(math.exp(0.6 / tau) / (math.exp(0.6 / tau) + math.exp(0.8 / tau)))
    # audio → video: positive ⟨a, v_k⟩ = −1/√2, negatives ⟨a, (1,0)⟩ = 0 and ⟨a, (0,−1)⟩ = 1
    p = -1 / math.sqrt(2)
    loss_a = -math.log(math.exp(p / tau) / (math.exp(p / tau) + math.exp(0.0) + math.exp(1.0 / tau)))
    got = gdt_nce_loss(**hand_example(), tau=tau)
    assert got.shape == ()
    assert got.item() == pytest.approx(loss_v + loss_a, rel=1e-6)
    # the logits themselves, positive first
    logits = cross_modal_logits(t([[3.0, 4.0]]), t([[2.0, 0.0]]), t([[0.0, 2.0]]), tau=tau)
    torch.testing.assert_close(logits, t([[0.6 / tau, 0.8 / tau]]))


def test_batch_mean_over_queries():
    # two video queries sharing one audio negative (1, 0): query 0 = its positive (0, 1) → logits [1, 0];
    # query 1 = (1, 0) with positive (0, 1) → logits [0, 1]
    v = t([[0.0, 1.0], [1.0, 0.0]])
    a = t([[0.0, 1.0], [0.0, 1.0]])
    neg = t([[1.0, 0.0]])
    l0 = math.log(1 + math.exp(-1.0))  # −log(e^1/(e^1+e^0))
    l1 = math.log(1 + math.exp(1.0))  # −log(e^0/(e^0+e^1))
    expected_v = (l0 + l1) / 2
    # audio queries (0,1),(0,1) vs video keys (0,1),(1,0), negative (1,0): logits [1,0] and [0,0]
    expected_a = (l0 + math.log(2.0)) / 2
    got = gdt_nce_loss(v, a, a, v, neg, neg, tau=1.0)
    assert got.item() == pytest.approx(expected_v + expected_a, rel=1e-6)


@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("per_query", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_closed_form_identical_positives_orthogonal_negatives(tau, per_query, dtype):
    b, n, d = 4, 5, 16
    eye = torch.eye(d, dtype=dtype)
    q = eye[:b] * torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=dtype)  # positives = queries (up to scale)
    neg = eye[b : b + n] * 7.0  # orthogonal to every query
    if per_query:
        neg = neg.expand(b, n, d)  # [B,N,D] form gives the same value
    got = gdt_nce_loss(q, q.clone(), q.clone(), q, neg, neg, tau=tau)
    expected = 2 * math.log(1 + n * math.exp(-1 / tau))  # 2·log(1 + N·e^(−1/τ)) ≈ 6.2e-6 at τ = 0.07
    if dtype == torch.float64:
        assert got.item() == pytest.approx(expected, rel=1e-9)
    else:  # float32 log-softmax: absolute error ~1e-7 around logits of 1/τ
        assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_invariant_to_vector_scaling():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(6, 8, generator=g) for _ in range(4)] + [torch.randn(10, 8, generator=g) for _ in range(2)]
    scaled = [x * (0.1 + 5 * torch.rand(x.shape[0], 1, generator=g)) for x in args]  # a positive factor per vector
    torch.testing.assert_close(gdt_nce_loss(*args, tau=0.1), gdt_nce_loss(*scaled, tau=0.1))


def test_sgd_lowers_the_loss():
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(8, 16, generator=g, requires_grad=True) for _ in range(2)]  # video, audio embeddings
    negs = [torch.randn(32, 16, generator=g) for _ in range(2)]
    opt = torch.optim.SGD(params, lr=0.5)
    losses = []
    for _ in range(20):
        v, a = params
        loss = gdt_nce_loss(v, a, a, v, negs[0], negs[1], tau=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(math.isfinite(x) for x in losses)


def test_reid_top1():
    ex = hand_example()
    # video query: positive 0.6 < negative 0.8 → miss; audio query: positive −0.71 < 1 → miss
    assert gdt_reid_top1(**ex).item() == 0.0
    ex["audio_negatives"] = t([[0.0, -1.0]])  # ⟨v, n⟩ = −0.8 < 0.6 → hit
    assert gdt_reid_top1(**ex).item() == 0.5


def test_negatives_shape_is_checked():
    with pytest.raises(ValueError, match="negatives"):
        cross_modal_logits(torch.randn(2, 4), torch.randn(2, 4), torch.randn(4), tau=0.1)
