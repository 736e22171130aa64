"""The methods' losses as pure functions of tensors (no I/O, no Ray, no torch.distributed).

Each docstring cites the paper equation it implements. Shapes: B batch, D embedding dim,
N negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# GDT — Patrick, Asano et al. 2020, "Multi-modal Self-Supervision from Generalized Data
# Transformations": noise-contrastive loss over modality-sliced pairs.
# --------------------------------------------------------------------------------------------


def cross_modal_logits(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, *, tau: float) -> torch.Tensor:
    """Logits ``[⟨q_b, p_b⟩, ⟨q_b, n⟩ for n in negatives] / τ`` after L2-normalising every vector.

    ``query``, ``positive`` [B,D]; ``negatives`` [N,D] (shared by every query, e.g. a memory
    queue) or [B,N,D] (per query, e.g. the other clips of the batch). Returns [B,1+N] (float32,
    or float64 for float64 inputs) whose column 0 is the positive.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)  # half precision → float32 (AMP-safe)
    q = F.normalize(query.to(dtype), dim=-1)  # [B,D]
    p = F.normalize(positive.to(dtype), dim=-1)  # [B,D]
    n = F.normalize(negatives.to(dtype), dim=-1)  # [N,D] or [B,N,D]
    pos = (q * p).sum(-1, keepdim=True)  # [B,1]
    if n.dim() == 2:
        neg = q @ n.t()  # [B,N]
    elif n.dim() == 3:
        neg = torch.einsum("bd,bnd->bn", q, n)  # [B,N]
    else:
        raise ValueError(f"negatives: expected [N,D] or [B,N,D], got shape {tuple(negatives.shape)}")
    return torch.cat([pos, neg], dim=1) / tau  # [B,1+N]


def gdt_nce_loss(
    video_q: torch.Tensor,
    audio_k: torch.Tensor,
    audio_q: torch.Tensor,
    video_k: torch.Tensor,
    audio_negatives: torch.Tensor,
    video_negatives: torch.Tensor,
    *,
    tau: float = 0.07,
) -> torch.Tensor:
    """GDT's cross-modal NCE loss for the modality-slicing transformations t_v, t_a with T=2
    (Patrick et al. 2020, eq. 4–6): a clip's video embedding has its own audio embedding as the
    only positive and vice versa; only cross-modal similarities enter the loss.

    For every video query b::

        ℓ_v(b) = −log  exp(⟨v_b, a_b⟩/τ) / (exp(⟨v_b, a_b⟩/τ) + Σ_n exp(⟨v_b, n⟩/τ)),  n ∈ audio_negatives

    and symmetrically ℓ_a(b) for the audio queries with ``video_negatives``; every vector is
    L2-normalised first. Returns ``mean_b ℓ_v(b) + mean_b ℓ_a(b)`` (a scalar; float32 for
    half-precision inputs).

    Shapes: ``video_q``, ``audio_k``, ``audio_q``, ``video_k`` [B,D] (query b's positive key is
    row b of the other modality's keys); ``audio_negatives``, ``video_negatives`` [N,D], shared
    by the whole batch (a MoCo queue) — or [B,N,D], one set per query (the other clips of the
    global batch in GDT's official batch-negatives mode).
    """
    zeros = torch.zeros(video_q.shape[0], dtype=torch.long, device=video_q.device)  # [B] the positive is column 0
    loss_v = F.cross_entropy(cross_modal_logits(video_q, audio_k, audio_negatives, tau=tau), zeros)
    loss_a = F.cross_entropy(cross_modal_logits(audio_q, video_k, video_negatives, tau=tau), zeros)
    return loss_v + loss_a


@torch.no_grad()
def gdt_reid_top1(
    video_q: torch.Tensor,
    audio_k: torch.Tensor,
    audio_q: torch.Tensor,
    video_k: torch.Tensor,
    audio_negatives: torch.Tensor,
    video_negatives: torch.Tensor,
) -> torch.Tensor:
    """Contrastive re-identification top-1 for :func:`gdt_nce_loss`'s inputs: the fraction of
    queries whose positive scores strictly highest among [positive, negatives], averaged over
    the video→audio and audio→video directions (a scalar in [0, 1])."""

    def top1(q, k, neg):
        logits = cross_modal_logits(q, k, neg, tau=1.0)  # [B,1+N]
        return (logits[:, :1] > logits[:, 1:]).all(dim=1).float().mean()

    return 0.5 * (top1(video_q, audio_k, audio_negatives) + top1(audio_q, video_k, video_negatives))


# --------------------------------------------------------------------------------------------
# Cross and Learn — Sayed, Brattoli, Ommer 2018, "Cross and Learn: Cross-Modal
# Self-Supervision": cosine distances within and across (RGB, motion) pairs.
# --------------------------------------------------------------------------------------------


def cal_distance(a: torch.Tensor, b: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """Cross and Learn's cosine distance, row by row: ``d(a,b) = 1 − a·b / (√(|a|²+ε)·√(|b|²+ε))``.
    ε inside the norms keeps zero vectors finite (d = 1). [B,D], [B,D] → [B] (float32, or
    float64 for float64 inputs)."""
    dtype = torch.promote_types(a.dtype, torch.float32)  # half precision → float32 (AMP-safe)
    a, b = a.to(dtype), b.to(dtype)
    norm_a = (a.pow(2).sum(-1) + eps).sqrt()  # [B]
    norm_b = (b.pow(2).sum(-1) + eps).sqrt()  # [B]
    return 1 - (a * b).sum(-1) / (norm_a * norm_b)


def cross_and_learn_loss(
    f_i: torch.Tensor,
    g_i: torch.Tensor,
    f_j: torch.Tensor,
    g_j: torch.Tensor,
    *,
    div_weight: float = 1.0,
    cross_weight: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Cross and Learn's loss (Sayed et al. 2018, eq. 1–4) over B tuples of two pairs (i, j),
    each an RGB feature f and a motion (flow or frame-difference) feature g::

        L_cross = mean_b ½[d(f_i, g_i) + d(f_j, g_j)]      a pair's two modalities agree
        L_div   = mean_b ½[d(f_i, f_j) + d(g_i, g_j)]      different pairs differ, per modality
        L       = cross_weight·L_cross − div_weight·L_div

    with d of :func:`cal_distance`. ``div_weight=0`` is the L_cross-only ablation (collapses),
    ``cross_weight=0`` the L_div-only one. Shapes: all four [B,D] (fc6 features); returns a scalar.
    """
    cross = 0.5 * (cal_distance(f_i, g_i, eps=eps) + cal_distance(f_j, g_j, eps=eps))  # [B]
    div = 0.5 * (cal_distance(f_i, f_j, eps=eps) + cal_distance(g_i, g_j, eps=eps))  # [B]
    return (cross_weight * cross - div_weight * div).mean()


# --------------------------------------------------------------------------------------------
# Cross-Pixel Optical-Flow Similarity — Mahendran, Thewlis, Vedaldi 2018: the similarity of
# pixel embeddings must match the similarity of their optical flow vectors. Shapes: B images,
# N sampled pixels, D embedding dim; kernels are [B,N,N] with rows p and columns q.
# --------------------------------------------------------------------------------------------


def embedding_kernel(emb: torch.Tensor) -> torch.Tensor:
    """K_φ(p,q) = ¼·cos(φ_p, φ_q) (eq. 3): [B,N,D] → [B,N,N]."""
    e = F.normalize(emb, dim=-1)  # [B,N,D]
    return 0.25 * e @ e.transpose(1, 2)


def flow_kernel(flow: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """K_f(p,q) = exp(−‖f_p − f_q‖² / (2σ²)) (eq. 3): [B,N,2] → [B,N,N]."""
    sq = flow.pow(2).sum(-1)  # [B,N]
    d2 = (sq[:, :, None] + sq[:, None, :] - 2 * flow @ flow.transpose(1, 2)).clamp_min(0)  # [B,N,N]
    return torch.exp(-d2 / (2 * sigma**2))


def cross_pixel_flow_loss(emb: torch.Tensor, flow: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Cross-pixel flow similarity loss (Mahendran et al. 2018, eq. 2–5).

    Both kernels get their diagonal lowered by 1 (so a pixel is not its own best match) and
    each column q is softmax-normalised over p: S(p,q) = exp K(p,q) / Σ_p' exp K(p',q). The loss
    is the cross-entropy between the flow and embedding column distributions::

        L = mean_{b,q}  −Σ_p S_f(p,q) · log S_φ(p,q)

    ``emb`` [B,N,D] (any scale: only its direction counts), ``flow`` [B,N,2] at the same
    pixels (log-normalised, :func:`raysup.data.flow.log_normalize`), ``sigma`` > 0 a float or a
    scalar tensor (learned σ gets gradients). Returns a float32 scalar for half inputs.
    """
    dtype = torch.promote_types(emb.dtype, torch.float32)  # AMP-safe
    eye = torch.eye(emb.shape[1], dtype=dtype, device=emb.device)  # [N,N]
    k_phi = embedding_kernel(emb.to(dtype)) - eye  # [B,N,N]
    k_f = flow_kernel(flow.to(dtype), sigma) - eye  # [B,N,N]
    s_f = k_f.softmax(dim=1)  # [B,N,N], columns sum to 1
    log_s_phi = k_phi.log_softmax(dim=1)  # [B,N,N]
    return -(s_f * log_s_phi).sum(dim=1).mean()


def kernel_target_alignment_loss(emb: torch.Tensor, flow: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The paper's kernel-target-alignment ablation (Mahendran et al. 2018, sec. 3, after
    Cristianini et al. 2002): ``1 − mean_b ⟨K_φ, K_f⟩_F / (‖K_φ‖_F ‖K_f‖_F)`` with the plain
    kernels of eq. 3 (no diagonal change; the ¼ cancels). Shapes as
    :func:`cross_pixel_flow_loss`; a scalar in [0, 2]."""
    dtype = torch.promote_types(emb.dtype, torch.float32)
    k_phi = embedding_kernel(emb.to(dtype)).flatten(1)  # [B,N·N]
    k_f = flow_kernel(flow.to(dtype), sigma).flatten(1)  # [B,N·N]
    return 1 - F.cosine_similarity(k_phi, k_f, dim=1).mean()
