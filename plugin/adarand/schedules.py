"""Learning-rate factors as functions of the step ``t`` (0-based) over a run of ``total`` steps.

``cosine_7_16``: ``max(0, cos(pi * 7/16 * p))`` with ``p = (t - w) / (total - w)`` clipped to
[0, 1], after ``w`` steps of linear warm-up ``t / w``. This is the per-iteration schedule of the
official AdaRand code (``util/train_util.py``, ``CosineAnnealingLR`` with ``num_cycles = 7/16``),
used there for the prior's Adam and for the AdamW runs; it ends at ``cos(7 pi / 16)``, about 0.195.
``half_cosine``: ``(1 + cos(pi * min(t, total) / total)) / 2``, decaying to 0 and staying there.

This is the one definition of the schedules. A step given as a Python number gives a float
(``math``); a float64 tensor of steps gives a tensor of factors, elementwise, from the same
expressions (``torch``): the prior's device-side update (``ops/prior_step.py``) calls it so.
The Triton kernel's own copy (``ops/prior_step_triton.py``) is tested against it, step by step.
"""
import math
from typing import Any

import torch

SCHEDULES = ("cosine_7_16", "half_cosine", "constant")


class _Scalar:
    """The operations of the schedules on Python numbers."""
    cos = staticmethod(math.cos)

    @staticmethod
    def clip(x, low, high):
        return min(high, max(low, x))

    @staticmethod
    def floor_at_0(x):
        return max(0.0, x)

    @staticmethod
    def minimum(x, high):
        return min(x, high)

    @staticmethod
    def where(cond, a, b):
        return a if cond else b

    @staticmethod
    def ones_like(x):
        return 1.0


class _Tensor:
    """The same operations, elementwise on tensors."""
    cos = staticmethod(torch.cos)

    @staticmethod
    def clip(x, low, high):
        return x.clamp(low, high)

    @staticmethod
    def floor_at_0(x):
        return x.clamp_min(0.0)

    @staticmethod
    def minimum(x, high):
        return x.clamp_max(high)

    where = staticmethod(torch.where)
    ones_like = staticmethod(torch.ones_like)


def _ops(step: Any) -> Any:
    return _Tensor if isinstance(step, torch.Tensor) else _Scalar


def cosine_7_16(step: Any, total: float, warmup: float = 0) -> Any:
    ops = _ops(step)
    shifted = step - warmup if warmup else step
    progress = ops.clip(shifted / max(1, total - warmup), 0.0, 1.0)
    factor = ops.floor_at_0(ops.cos(math.pi * 7.0 / 16.0 * progress))
    if warmup:
        factor = ops.where(step < warmup, step / max(1, warmup), factor)
    return factor


def half_cosine(step: Any, total: float) -> Any:
    return 0.5 * (1.0 + _ops(step).cos(math.pi * _ops(step).minimum(step, total) / total))


def check_warmup(schedule: str, warmup: float) -> None:
    """Raise ValueError for a warm-up on a schedule other than ``cosine_7_16``, the one that defines it."""
    if warmup and schedule != "cosine_7_16":
        raise ValueError(f"warm-up is defined for the cosine_7_16 schedule only, not {schedule!r}")


def lr_factor(schedule: str, step: Any, total: float, warmup: float = 0) -> Any:
    """The factor of ``schedule`` (one of ``SCHEDULES``) at ``step``; ``constant`` is 1.

    Args:
        schedule: a name of ``SCHEDULES``. step: a number, or a float64 tensor of steps.
        total: the run's length, >= 1. warmup: steps of linear warm-up (``cosine_7_16`` only).

    Returns:
        a float for a number, a tensor of ``step``'s shape for a tensor.
    """
    check_warmup(schedule, warmup)
    if schedule == "cosine_7_16":
        return cosine_7_16(step, total, warmup)
    if schedule == "half_cosine":
        return half_cosine(step, total)
    if schedule == "constant":
        return _ops(step).ones_like(step)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {SCHEDULES}")
