"""torch.distributed helpers that fall back to the single-process case when it is not in use."""
import os
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group, 1 without torch.distributed."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default group, 0 without torch.distributed."""
    return dist.get_rank() if is_distributed() else 0


def init_from_env() -> torch.device:
    """Join the ``torchrun`` group (env://; NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1.

    Returns:
        The device of this process: ``cuda:LOCAL_RANK`` (made current) when CUDA is available, else CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", init_method="env://")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def all_reduce_sum_(*tensors: torch.Tensor) -> None:
    """Sum each tensor in place over all ranks; a no-op in a single process.

    Sums and counts are reduced, never means, so ranks with unequal batches combine
    exactly (the mean of rank means is wrong when counts differ).
    """
    if world_size() == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def gather_objects(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects); ``[obj]`` alone."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The CPU tensors of all ranks concatenated along dim 0, in rank order."""
    parts = gather_objects(tensor)
    return parts[0] if len(parts) == 1 else torch.cat(parts)
