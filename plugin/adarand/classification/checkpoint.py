"""Atomic checkpoints and the random-number-generator state they carry.

A checkpoint is written to ``<path>.tmp`` and moved over ``<path>`` with ``os.replace``,
so a run killed mid-write leaves the previous checkpoint intact.
"""
import os
import random

import numpy as np
import torch


def atomic_save(obj, path) -> None:
    """``torch.save`` to a temporary file next to ``path``, then rename over it."""
    tmp = f"{path}.tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state(loader_generator=None) -> dict:
    """Python, NumPy, torch (CPU and every CUDA device) and DataLoader generator states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator=None) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by this trainer, with a clear error when it is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=False)
