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
    """MoCo's shuffled BN: gather every tensor [B,...] from all workers, permute the global batch
    with one permutation drawn on rank 0 and broadcast, and keep this worker's slice of it.
    Returns (shuffled tensors [B,...], unshuffle) where ``unshuffle(y)`` maps per-worker outputs
    [B,...] of the shuffled inputs back to this worker's original rows. An identity in one process."""
    world, rank = dist.world_size(), dist.rank()
    if world == 1:
        return list(xs), lambda y: y
    gathered = [dist.all_gather(x) for x in xs]  # [W·B,...] each
    n = gathered[0].shape[0]
    perm = dist.broadcast(torch.randperm(n, device=gathered[0].device), 0)  # [W·B]
    inverse = torch.argsort(perm)  # [W·B]
    mine = perm.view(world, -1)[rank]  # [B] global rows this worker computes
    back = inverse.view(world, -1)[rank]  # [B] where this worker's original rows went

    def unshuffle(y: torch.Tensor) -> torch.Tensor:
        return dist.all_gather(y)[back]  # [B,...]

    return [g[mine] for g in gathered], unshuffle
