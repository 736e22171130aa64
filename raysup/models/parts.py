"""Small parts that self-supervised methods share (lightly-style): a projection head, the
momentum (EMA) update of key encoders, and MoCo's shuffled BN across workers."""
from __future__ import annotations

import torch
from torch import nn

from raysup import dist


def mlp_head(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """A projection MLP: Linear → BN → ReLU → Linear (GDT's official head, without its dropout)."""
    return nn.Sequential(nn.Linear(d_in, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_out))


@torch.no_grad()
def momentum_update(query: nn.Module, key: nn.Module, momentum: float) -> None:
    """MoCo's key-encoder update after each optimiser step (He et al. 2020, Eq. 2):
    θ_k ← m·θ_k + (1−m)·θ_q, parameter by parameter (same architecture)."""
    for q, k in zip(query.parameters(), key.parameters(), strict=True):
        k.mul_(momentum).add_(q.detach(), alpha=1 - momentum)


def shuffle_across_workers(xs: list[torch.Tensor]):
    """MoCo's shuffled BN: permute the global batch (every worker's B rows, in rank order) with
    one permutation drawn on rank 0 and broadcast; worker r computes the permuted batch's rows
    r·B … r·B+B−1. Rows travel by one all-to-all per tensor, each worker sending only its own
    rows to where they go (an all-gather would move the whole global batch to every worker:
    ~4.6 GB of float32 clips per GPU and step at GDT's 64 GPUs × 16). Returns (shuffled tensors
    [B,...], unshuffle) where ``unshuffle(y)`` sends per-worker outputs [B,...] of the shuffled
    inputs back to this worker's original rows. An identity in one process."""
    world, rank = dist.world_size(), dist.rank()
    if world == 1:
        return list(xs), lambda y: y
    b, device = xs[0].shape[0], xs[0].device
    perm = dist.broadcast(torch.randperm(world * b, device=device), 0)  # [W·B] global row at each position
    inverse = torch.argsort(perm)  # [W·B] position of each global row
    dest = inverse[rank * b : (rank + 1) * b]  # [B] positions of this worker's rows
    send_order = torch.argsort(dest)  # [B] own rows by position: grouped by the worker that takes them
    src = perm[rank * b : (rank + 1) * b] // b  # [B] the worker each of this worker's positions comes from
    recv_order = torch.argsort(src, stable=True)  # [B] positions in the order their rows arrive
    send_counts = torch.bincount(dest // b, minlength=world).tolist()  # [W]
    recv_counts = torch.bincount(src, minlength=world).tolist()  # [W]

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        out[recv_order] = dist.all_to_all(x[send_order], send_counts, recv_counts)
        return out

    def unshuffle(y: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(y)
        out[send_order] = dist.all_to_all(y[recv_order], recv_counts, send_counts)
        return out

    return [shuffle(x) for x in xs], unshuffle
