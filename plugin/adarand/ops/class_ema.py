"""Per-class running means of the features (AdaRand Eq. 14-15).

For every class c present in the batch,
``m_c <- alpha * m_c + (1 - alpha) * mean_{i: y_i = c} f_i``; absent classes keep
their value. Rows whose label is outside [0, C) (``IGNORE_INDEX`` among them) are
not counted and add nothing. Two phases — per-class sums and counts, then the update — with the
sums and counts all-reduced in between under torch.distributed, so every rank ends
with the same running means.
"""
from typing import Optional

import torch

from ..distributed import all_reduce_sum_, world_size
from .backend import HAS_TRITON, resolve, triton_interpreter_on
from .common import accumulation_dtype, active_rows, safe_labels


def _class_sums_ref(features, labels, num_classes):
    """C x (D + 1): per-class feature sums over the active rows, with the per-class count in the last column."""
    acc = accumulation_dtype(features.dtype)
    active = active_rows(labels, num_classes)
    rows = torch.cat([features.to(acc), features.new_ones(features.shape[0], 1, dtype=acc)], dim=1)
    rows = torch.where(active[:, None], rows, torch.zeros((), dtype=acc, device=rows.device))
    return rows.new_zeros(num_classes, rows.shape[1]).index_add_(0, safe_labels(labels, active), rows)


def _ema_apply_ref_(running_mean, sums_and_counts, alpha):
    """Apply Eq. 15 in place to the classes with a nonzero count."""
    sums, counts = sums_and_counts[:, :-1], sums_and_counts[:, -1:]
    batch_mean = (sums / counts.clamp(min=1)).to(running_mean.dtype)
    updated = torch.lerp(batch_mean, running_mean, alpha)  # alpha * m + (1 - alpha) * mean
    running_mean.copy_(torch.where(counts > 0, updated, running_mean))


# -- the fused kernels as custom ops (Triton on CUDA; on CPU the reference, or the kernels under the interpreter) --
FLAG_COLUMNS = 128  # columns per non-finite flag of the fused class sums (their kernel's column block)


def _nonfinite_flags_ref(sums_and_counts):
    """Per class and block of FLAG_COLUMNS feature columns: how many sums are not finite (int32)."""
    num_classes, dim = sums_and_counts.shape[0], sums_and_counts.shape[1] - 1
    blocks = -(-dim // FLAG_COLUMNS)
    bad = (~torch.isfinite(sums_and_counts[:, :dim])).to(torch.int32)
    bad = torch.nn.functional.pad(bad, (0, blocks * FLAG_COLUMNS - dim))
    return bad.view(num_classes, blocks, FLAG_COLUMNS).sum(dim=2, dtype=torch.int32)


def _guarded_ema_apply_ref_(running_mean, sums_and_counts, alpha, applied):
    """Eq. 15 in place if the 0-dim bool ``applied`` is True (else nothing moves); returns ``applied``."""
    sums_and_counts = torch.where(applied, sums_and_counts, torch.zeros_like(sums_and_counts))
    _ema_apply_ref_(running_mean, sums_and_counts, alpha)
    return applied


@torch.library.custom_op("adarand::class_sums", mutates_args=())
def _class_sums_op(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """C x (D + 1) per-class sums and counts, and C x ceil(D / FLAG_COLUMNS) non-finite flags (fused kernel; two
    over row blocks)."""
    from .class_ema_triton import class_sums_and_flags_triton

    return class_sums_and_flags_triton(features, labels, num_classes)


@_class_sums_op.register_kernel("cpu")
def _class_sums_cpu(features, labels, num_classes):
    if HAS_TRITON and triton_interpreter_on():
        from .class_ema_triton import class_sums_and_flags_triton

        return class_sums_and_flags_triton(features, labels, num_classes)
    sums = _class_sums_ref(features, labels, num_classes)
    return sums, _nonfinite_flags_ref(sums)


@_class_sums_op.register_fake
def _class_sums_fake(features, labels, num_classes):
    dim = features.shape[1]
    return (features.new_empty((num_classes, dim + 1), dtype=accumulation_dtype(features.dtype)),
            features.new_empty((num_classes, -(-dim // FLAG_COLUMNS)), dtype=torch.int32))


@torch.library.custom_op("adarand::ema_apply_", mutates_args=("running_mean",))
def _ema_apply_op(running_mean: torch.Tensor, sums_and_counts: torch.Tensor, alpha: float,
                  flags: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Eq. 15 in place unless a flag is set (fused kernel); returns the 0-dim bool ``applied``."""
    from .class_ema_triton import ema_apply_triton_

    applied = running_mean.new_empty((), dtype=torch.bool)
    ema_apply_triton_(running_mean, sums_and_counts, alpha, flags, applied)
    return applied


@_ema_apply_op.register_kernel("cpu")
def _ema_apply_cpu(running_mean, sums_and_counts, alpha, flags=None):
    if HAS_TRITON and triton_interpreter_on():
        from .class_ema_triton import ema_apply_triton_

        applied = running_mean.new_empty((), dtype=torch.bool)
        ema_apply_triton_(running_mean, sums_and_counts, alpha, flags, applied)
        return applied
    if flags is None:
        applied = torch.ones((), dtype=torch.bool, device=running_mean.device)
    else:
        applied = (flags == 0).all().to(running_mean.device)
    return _guarded_ema_apply_ref_(running_mean, sums_and_counts, alpha, applied)


@_ema_apply_op.register_fake
def _ema_apply_fake(running_mean, sums_and_counts, alpha, flags=None):
    return running_mean.new_empty((), dtype=torch.bool)


def class_sums(features: torch.Tensor, labels: torch.Tensor, num_classes: int, impl: str | None = None) -> torch.Tensor:
    """Per-class sums of the active rows' features with the per-class count as a last column.

    Args:
        features: (B, D). labels: (B,) int64; rows outside [0, C) are not counted.
        num_classes: C. impl: ``"torch"``, ``"triton"`` or None (the backend setting).

    Returns:
        (C, D + 1) in the accumulation dtype (fp32 for fp16/bf16 features).
    """
    if resolve(features, impl) == "triton":
        return _class_sums_op(features, labels, num_classes)[0]
    return _class_sums_ref(features, labels, num_classes)


def ema_apply_(running_mean: torch.Tensor, sums_and_counts: torch.Tensor, alpha: float,
               impl: str | None = None) -> torch.Tensor | None:
    """Eq. 15 in place, ``m_c <- alpha m_c + (1 - alpha) sums_c / n_c``, for the classes with ``n_c > 0``.

    Args:
        running_mean: (C, D), updated in place. sums_and_counts: (C, D + 1), from :func:`class_sums`.
        alpha: EMA factor in [0, 1]. impl: as in :func:`class_sums`.

    Returns:
        None on the torch path, ``running_mean`` on the Triton path (use the argument).
    """
    if resolve(running_mean, impl) == "triton":
        _ema_apply_op(running_mean, sums_and_counts, float(alpha))
        return running_mean
    return _ema_apply_ref_(running_mean, sums_and_counts, alpha)


@torch.no_grad()
def class_ema_(running_mean: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, alpha: float,
               impl: str | None = None) -> torch.Tensor:
    """Update ``running_mean`` (C x D) in place from one batch; one all-reduce when distributed.

    A batch whose (all-reduced) class sums are not all finite leaves every running mean
    unchanged, decided on the device (its counts are zeroed), so all ranks skip it together.

    Args:
        running_mean: (C, D), updated in place. features: (B, D). labels: (B,) int64.
        alpha: EMA factor in [0, 1]. impl: as in :func:`class_sums`.

    Returns:
        that decision: a 0-dim bool device tensor, True when the batch was applied.
    """
    if resolve(features, impl) == "triton":  # the guard is in the kernels: two launches, three over row blocks
        sums_and_counts, flags = _class_sums_op(features, labels, running_mean.shape[0])
        if world_size() > 1:
            all_reduce_sum_(sums_and_counts)
            # the all-reduced sums decide, on every rank alike; one flag, so the apply kernel's programs read one value
            flags = torch.isfinite(sums_and_counts).all().logical_not()
        return _ema_apply_op(running_mean, sums_and_counts, float(alpha), flags)
    sums_and_counts = _class_sums_ref(features, labels, running_mean.shape[0])
    all_reduce_sum_(sums_and_counts)
    return _guarded_ema_apply_ref_(running_mean, sums_and_counts, alpha, torch.isfinite(sums_and_counts).all())
