"""The one module that touches ``torch.distributed``; every function is an identity in one process."""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over workers (a new tensor)."""
    if not is_distributed():
        return x.clone()
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()


def all_gather(x: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """Concatenate ``x`` [B,...] from all workers along dim 0 → [W·B,...], own rows in rank order.

    With ``grad=True`` gradients flow back to every worker's rows.
    """
    if not is_distributed():
        return x
    if grad:
        import torch.distributed.nn.functional as dist_fn

        return torch.cat(dist_fn.all_gather(x), dim=0)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_to_all(x: torch.Tensor, send_counts: list[int], recv_counts: list[int]) -> torch.Tensor:
    """Rows of ``x`` [N,...] to the other workers: the first ``send_counts[0]`` to worker 0, the
    next ``send_counts[1]`` to worker 1, …; returns the rows received [sum(recv_counts),...],
    worker 0's first. Each worker moves only its own rows (an all-gather moves everyone's)."""
    if not is_distributed():
        return x
    out = x.new_empty((sum(recv_counts), *x.shape[1:]))
    dist.all_to_all_single(out, x.contiguous(), output_split_sizes=recv_counts, input_split_sizes=send_counts)
    return out


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """``x`` from worker ``src`` on every worker (in place)."""
    if is_distributed():
        dist.broadcast(x, src)
    return x
