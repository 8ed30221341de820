"""Checkpoints of the classification trainer and the random-number-generator state they carry.

Checkpoints are written with :func:`adarand.files.save_torch` (unique temporary file,
fsync, rename: a run killed mid-write leaves the previous checkpoint intact) and read with
:func:`adarand.files.load_torch` (``weights_only=True``: nothing in a checkpoint can execute
code). RNG states are stored as tensors and plain Python types for that reason.
"""
import random
from typing import Any

import numpy as np
import torch

from adarand.files import load_torch


def _numpy_state() -> dict:
    state: Any = np.random.get_state()  # numpy's legacy 5-tuple
    kind, keys, pos, has_gauss, cached = state
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def rng_state(loader_generator: torch.Generator | None = None, noise_generator: torch.Generator | None = None) -> dict:
    """Python, NumPy, torch (CPU and every CUDA device), DataLoader and regularizer-noise generator states."""
    version, internal, gauss_next = random.getstate()
    state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    if noise_generator is not None:
        state["noise"] = noise_generator.get_state()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator | None = None,
                  noise_generator: torch.Generator | None = None) -> None:
    """Inverse of :func:`rng_state` (a checkpoint from before the noise had its own generator keeps the
    generator's fresh seed)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])
    if noise_generator is not None and "noise" in state:
        noise_generator.set_state(state["noise"])


def load_checkpoint(path: str, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by this trainer (weights_only=True; errors name the file)."""
    ckpt = load_torch(path, what="checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of the classification trainer (no 'model' entry)")
    return ckpt
