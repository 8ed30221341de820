"""Collectives that fall back to the identity when torch.distributed is not in use."""
import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group, 1 without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sum each tensor in place over all ranks; a no-op in a single process.

    Sums and counts are reduced, never means, so ranks with unequal batches combine
    exactly (the mean of rank means is wrong when counts differ).
    """
    if world_size() == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
