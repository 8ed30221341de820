"""Fused Triton kernels of the per-class running means (AdaRand Eq. 14-15).

``class_sums_triton``: ``out[c] = [sum_{i: y_i = c} f_i, n_c]`` (C x (D + 1)), one launch.
One program per class x column block scans the labels BLOCK_R rows at a time and adds
the rows of its class in row order (a fixed tree inside a block); a block without a row
of the class loads no features. No atomics, no sort: bit-reproducible whatever
``torch.use_deterministic_algorithms`` says, and every shape is fixed by (B, C, D): no
host sync. Rows whose label is outside [0, C) (``IGNORE_INDEX`` among them) match no
class. The same kernel flags its non-finite sums, so the EMA's finiteness guard costs no
launch of its own. The price: one class's rows are summed by the column blocks of one
program row, not spread over row blocks (a detection batch of 8192 ROIs that are 90 % one
class reads that class's rows serially in each of its D/128 programs).

``ema_apply_triton_``: ``m_c <- alpha m_c + (1 - alpha) s_c / n_c`` where ``n_c > 0``, and
nothing anywhere when a flag says a sum is not finite (a skipped batch).
"""
import torch
import triton
import triton.language as tl

from .common import accumulation_dtype
from .triton_common import fp32_hi_lo, tl_dtype

BLOCK_R = 32  # rows per step of the class-sums scan


@triton.jit
def _class_sums_kernel(f_ptr, labels_ptr, out_ptr, flags_ptr, B, D, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_D: tl.constexpr):
    """out[c, :D] = sum of the rows labelled c (in row order, BLOCK_R rows at a time); out[c, D] = n_c;
    flags[c, block] = how many of this program's sums are not finite.

    Program (c, column block) scans the labels; a block of rows holding no row of class c loads no
    features. Rows labelled outside [0, C) (IGNORE_INDEX among them) equal no program's class.
    """
    c = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    count = tl.zeros([BLOCK_R], dtype=tl.int32)
    for start in range(0, B, BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        match = tl.load(labels_ptr + rows, mask=rows < B, other=-1) == c
        count += match.to(tl.int32)
        if tl.sum(match.to(tl.int32), axis=0) > 0:
            x = tl.load(f_ptr + rows[:, None].to(tl.int64) * D + cols[None, :],
                        mask=match[:, None] & col_mask[None, :], other=0.0)
            acc += tl.sum(x.to(ACC), axis=0)
    row = out_ptr + c.to(tl.int64) * (D + 1)
    tl.store(row + cols, acc, mask=col_mask)
    tl.store(row + D, tl.sum(count, axis=0).to(ACC), mask=pid_d == 0)
    not_finite = ((acc - acc) != 0) & col_mask  # inf - inf and NaN - NaN are NaN
    tl.store(flags_ptr + c * tl.num_programs(1) + pid_d, tl.sum(not_finite.to(tl.int32), axis=0))


@triton.jit
def _ema_apply_kernel(mean_ptr, sums_ptr, flags_ptr, applied_ptr, D, NFLAGS, alpha_hi, alpha_lo, ACC: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_F: tl.constexpr):
    """m_c <- alpha m_c + (1 - alpha) s_c / n_c for n_c > 0 (the batch mean rounded to m's dtype first),
    unless one of the NFLAGS flags is nonzero (a non-finite sum: nothing moves); applied = no flag set.

    Float arguments reach a kernel as fp32, so alpha comes as fp32 ``hi + lo`` (48 bits for fp64).
    """
    bad = tl.zeros([BLOCK_F], dtype=tl.int32)
    for start in range(0, NFLAGS, BLOCK_F):
        offsets = start + tl.arange(0, BLOCK_F)
        bad += (tl.load(flags_ptr + offsets, mask=offsets < NFLAGS, other=0) != 0).to(tl.int32)
    finite = tl.sum(bad, axis=0) == 0
    alpha = tl.cast(alpha_hi, ACC) + tl.cast(alpha_lo, ACC)
    c = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    tl.store(applied_ptr, finite, mask=(c == 0) & (tl.program_id(1) == 0))
    count = tl.load(sums_ptr + c * (D + 1) + D).to(ACC)
    if (count > 0) & finite:
        sums = tl.load(sums_ptr + c * (D + 1) + cols, mask=col_mask, other=0.0).to(ACC)
        old = tl.load(mean_ptr + c * D + cols, mask=col_mask, other=0.0)
        batch_mean = (sums / count).to(old.dtype).to(ACC)
        new = batch_mean + alpha * (old.to(ACC) - batch_mean)
        tl.store(mean_ptr + c * D + cols, new.to(old.dtype), mask=col_mask)


def _block_d(dim):
    return min(triton.next_power_of_2(dim), 128)


def class_sums_and_flags_triton(features, labels, num_classes):
    """``(sums, flags)``: the C x (D + 1) per-class sums of ``features`` (B x D) with the counts in the last
    column, and per (class, column block) the number of non-finite sums (int32)."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need B x D features and B labels; got {tuple(features.shape)}, {tuple(labels.shape)}")
    batch, dim = features.shape
    acc = accumulation_dtype(features.dtype)
    block_d = _block_d(dim)
    grid = (num_classes, triton.cdiv(dim, block_d))
    out = torch.empty(num_classes, dim + 1, dtype=acc, device=features.device)
    flags = torch.empty(grid, dtype=torch.int32, device=features.device)
    _class_sums_kernel[grid](features.contiguous(), labels.contiguous(), out, flags, batch, dim, ACC=tl_dtype(acc),
                             BLOCK_R=BLOCK_R, BLOCK_D=block_d)
    return out, flags


def class_sums_triton(features, labels, num_classes):
    """C x (D + 1) per-class sums of ``features`` (B x D) with the counts in the last column."""
    return class_sums_and_flags_triton(features, labels, num_classes)[0]


def ema_apply_triton_(running_mean, sums_and_counts, alpha, flags=None, applied=None):
    """In place on ``running_mean`` (C x D): Eq. 15 for the classes whose count is nonzero, unless ``flags``
    (any shape, e.g. from :func:`class_sums_and_flags_triton`) holds a nonzero entry. ``applied``: an optional
    0-dim bool tensor set to whether it moved. Returns ``running_mean``."""
    num_classes, dim = running_mean.shape
    if tuple(sums_and_counts.shape) != (num_classes, dim + 1):
        raise ValueError(f"sums_and_counts must be {num_classes} x {dim + 1}; got {tuple(sums_and_counts.shape)}")
    target = running_mean if running_mean.is_contiguous() else running_mean.contiguous()
    compute = torch.promote_types(accumulation_dtype(running_mean.dtype), sums_and_counts.dtype)
    alpha_hi, alpha_lo = fp32_hi_lo(float(alpha))
    block_d = _block_d(dim)
    if applied is None:
        applied = torch.empty((), dtype=torch.bool, device=running_mean.device)
    nflags = 0 if flags is None else flags.numel()
    flags = applied if flags is None else flags.contiguous()  # without flags none is read: never skipped
    _ema_apply_kernel[(num_classes, triton.cdiv(dim, block_d))](
        target, sums_and_counts.contiguous(), flags, applied, dim, nflags, alpha_hi, alpha_lo,
        ACC=tl_dtype(compute), BLOCK_D=block_d, BLOCK_F=1024)
    if target is not running_mean:
        running_mean.copy_(target)
    return running_mean
