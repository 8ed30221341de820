"""Run a function on several gloo ranks (``torch.multiprocessing``) and hand back what each returned."""
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_entry(rank, world_size, port, body, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(body(rank), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_on_ranks(body, out_dir, world_size=2) -> list:
    """``body(rank)`` in ``world_size`` processes of one gloo group (``body`` must be module-level, to be
    pickled); returns the ranks' results in rank order (tensors and plain types)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_entry, args=(world_size, port, body, str(out_dir)), nprocs=world_size, join=True)
    return [torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True) for r in range(world_size)]
