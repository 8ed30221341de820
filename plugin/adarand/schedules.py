"""Learning-rate factors as functions of the step ``t`` (0-based) over a run of ``total`` steps.

``cosine_7_16``: ``max(0, cos(pi * 7/16 * p))`` with ``p = (t - w) / (total - w)`` clipped to
[0, 1], after ``w`` steps of linear warm-up ``t / w``. This is the per-iteration schedule of the
official AdaRand code (``util/train_util.py``, ``CosineAnnealingLR`` with ``num_cycles = 7/16``),
used there for the prior's Adam and for the AdamW runs; it ends at ``cos(7 pi / 16)``, about 0.195.
``half_cosine``: ``(1 + cos(pi * min(t, total) / total)) / 2``, decaying to 0 and staying there.
"""
import math

SCHEDULES = ("cosine_7_16", "half_cosine", "constant")


def cosine_7_16(step: float, total: float, warmup: float = 0) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return max(0.0, math.cos(math.pi * 7.0 / 16.0 * progress))


def half_cosine(step: float, total: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def lr_factor(schedule: str, step: float, total: float, warmup: float = 0) -> float:
    """The factor of ``schedule`` (one of ``SCHEDULES``) at ``step``; ``constant`` is 1."""
    if schedule == "cosine_7_16":
        return cosine_7_16(step, total, warmup)
    if warmup:
        raise ValueError(f"warm-up is defined for the cosine_7_16 schedule only, not {schedule!r}")
    if schedule == "half_cosine":
        return half_cosine(step, total)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; expected one of {SCHEDULES}")
