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
