"""Cross-pixel flow similarity losses against hand-computed values, their invariances, and SGD;
the paper's flow log-normalisation against hand values."""
from __future__ import annotations

import math

import pytest
import torch

from raysup.data.flow import log_normalize
from raysup.losses import cross_pixel_flow_loss, kernel_target_alignment_loss


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


@pytest.mark.parametrize("sigma", [0.5, torch.tensor(0.5)])
def test_two_pixels_by_hand(sigma):
    # embeddings (1, 0) and (3, 4)/5·2: cos = 0.6 → K_φ = [[¼ − 1, 0.15], [0.15, ¼ − 1]]
    # flows (0, 0) and (0.3, 0.4): ‖Δf‖² = 0.25, σ = 0.5 → K_f = [[0, e^−½], [e^−½, 0]] after lowering
    emb = t([[[1.0, 0.0], [1.2, 1.6]]])
    flow = t([[[0.0, 0.0], [0.3, 0.4]]])
    s_f = softmax([0.0, math.exp(-0.5)])  # column q = 0 over p = 0, 1
    s_phi = softmax([-0.75, 0.15])
    column = -(s_f[0] * math.log(s_phi[0]) + s_f[1] * math.log(s_phi[1]))  # both columns alike by symmetry
    got = cross_pixel_flow_loss(emb, flow, sigma)
    assert got.shape == ()
    assert got.item() == pytest.approx(column, rel=1e-6)


def reference_loss(emb, flow, sigma):
    """Eq. 2–5 with explicit loops over images b and pixels p, q (plain Python floats)."""
    total, count = 0.0, 0
    for e, f in zip(emb.tolist(), flow.tolist()):
        n = len(e)
        norm = [math.sqrt(sum(x * x for x in v)) for v in e]
        k_phi = [[0.25 * sum(a * b for a, b in zip(e[p], e[q])) / (norm[p] * norm[q]) - (p == q) for q in range(n)] for p in range(n)]
        k_f = [[math.exp(-sum((a - b) ** 2 for a, b in zip(f[p], f[q])) / (2 * sigma**2)) - (p == q) for q in range(n)] for p in range(n)]
        for q in range(n):
            s_f = softmax([k_f[p][q] for p in range(n)])
            s_phi = softmax([k_phi[p][q] for p in range(n)])
            total += -sum(s_f[p] * math.log(s_phi[p]) for p in range(n))
            count += 1
    return total / count


def test_three_pixels_two_images_against_loops():
    g = torch.Generator().manual_seed(0)
    emb, flow = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 2, generator=g) * 0.3
    got = cross_pixel_flow_loss(emb, flow, 0.2)
    assert got.item() == pytest.approx(reference_loss(emb, flow, 0.2), rel=1e-5)
    # the flow target is not symmetric in p, q once softmax-normalised per column: check one
    # image where the three flows are all different, so every column has its own distribution
    assert got.item() != pytest.approx(cross_pixel_flow_loss(emb, flow.flip(1), 0.2).item(), rel=1e-4)


def test_invariances():
    g = torch.Generator().manual_seed(1)
    emb, flow = torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 2, generator=g) * 0.3
    loss = cross_pixel_flow_loss(emb, flow, 0.3)
    scale = torch.rand(2, 5, 1, generator=g) * 10 + 0.1  # per-pixel positive scales
    torch.testing.assert_close(cross_pixel_flow_loss(emb * scale, flow, 0.3), loss)
    perm = torch.randperm(5, generator=g)  # the same pixel order for embeddings and flow
    torch.testing.assert_close(cross_pixel_flow_loss(emb[:, perm], flow[:, perm], 0.3), loss)
    torch.testing.assert_close(cross_pixel_flow_loss(emb, flow + t([0.5, -0.2]), 0.3), loss)  # only differences count
    # …but permuting only one of them does change it
    assert abs(cross_pixel_flow_loss(emb, flow[:, perm], 0.3).item() - loss.item()) > 1e-4


def test_half_precision_gives_float32():
    emb, flow = torch.randn(2, 4, 16).half(), torch.randn(2, 4, 2).half()
    assert cross_pixel_flow_loss(emb, flow, 0.3).dtype == torch.float32


def test_gradients_lower_the_loss_and_move_a_learned_sigma():
    g = torch.Generator().manual_seed(2)
    flow = torch.cat([torch.zeros(1, 8, 2), torch.full((1, 8, 2), 0.4)], dim=1)  # two groups of 8 pixels moving differently
    flow = flow + 0.02 * torch.randn(1, 16, 2, generator=g)
    emb = torch.randn(1, 16, 16, generator=g).requires_grad_()
    log_sigma = torch.tensor(math.log(0.3), requires_grad=True)
    opt = torch.optim.Adam([emb, log_sigma], lr=0.05)
    first = None
    for _ in range(60):
        loss = cross_pixel_flow_loss(emb, flow, log_sigma.exp())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.02, (first, loss.item())
    assert abs(log_sigma.exp().item() - 0.3) > 0.01
    # the pixels that move together now embed together
    e = torch.nn.functional.normalize(emb.detach()[0], dim=1)
    sim = e @ e.t()
    assert sim[:8, :8].mean() > sim[:8, 8:].mean() + 0.5


def test_kernel_target_alignment_by_hand():
    emb = t([[[1.0, 0.0], [1.2, 1.6]]])  # cos 0.6
    flow = t([[[0.0, 0.0], [0.3, 0.4]]])  # K_f off-diagonal exp(−0.25/0.08) at σ = 0.2
    g = math.exp(-0.25 / 0.08)
    k_phi, k_f = [1.0, 0.6, 0.6, 1.0], [1.0, g, g, 1.0]  # the ¼ cancels
    align = sum(a * b for a, b in zip(k_phi, k_f)) / math.sqrt(sum(a * a for a in k_phi) * sum(b * b for b in k_f))
    assert kernel_target_alignment_loss(emb, flow, 0.2).item() == pytest.approx(1 - align, rel=1e-5)
    # perfectly aligned kernels: identical embeddings where flows are identical, orthogonal ones far apart
    emb2 = t([[[1.0, 0.0], [0.0, 1.0]]])
    flow2 = t([[[0.0, 0.0], [50.0, 0.0]]])
    assert kernel_target_alignment_loss(emb2, flow2, 0.5).item() == pytest.approx(0.0, abs=1e-6)


def test_log_normalize_by_hand():
    f = t([0.0, 1.0, -1.0, 3.0, 56.0, -100.0])
    log57 = math.log(57.0)
    expected = [0.0, math.log(2) / log57, -math.log(2) / log57, math.log(4) / log57, 1.0, -1.0]  # −100 clips to −1
    torch.testing.assert_close(log_normalize(f), t(expected))
    torch.testing.assert_close(log_normalize(t([3.0, -8.0, 20.0]), max_magnitude=8.0), t([math.log(4) / math.log(9), -1.0, 1.0]))
    assert log_normalize(torch.zeros(2, 2, 4, 4)).shape == (2, 2, 4, 4)  # per component, any shape
