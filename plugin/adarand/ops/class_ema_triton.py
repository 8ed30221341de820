"""Fused Triton kernels of the per-class running means (AdaRand Eq. 14-15).

``class_sums_triton``: ``out[c] = [sum_{i: y_i = c} f_i, n_c]`` (C x (D + 1)).
Detection batches are mostly one class, so scattering rows into ``out[y_i]`` with
atomics would serialise on one row. Instead the rows are visited in label order
(``torch.sort``, stable, on the device) and cut into *segments*: maximal runs of one
label inside a block of ``BLOCK_R`` consecutive sorted rows. Pass 1 (one program per
row block x column block) sums each of its segments into its own row of a partial
buffer; pass 2 (one program per class x column block) adds the consecutive segments
of its class in a fixed order. No atomics at all, so the result is bit-reproducible
whatever ``torch.use_deterministic_algorithms`` says, a dominant class is spread over
every row block, and every shape is fixed by (B, C, D): no host sync. Rows whose label is outside [0, C)
(``IGNORE_INDEX`` among them) are given the sort key C: they sort last, in no class's range.

``ema_apply_triton_``: ``m_c <- alpha m_c + (1 - alpha) s_c / n_c`` where ``n_c > 0``.
"""
import struct

import torch
import triton
import triton.language as tl

from .target_loss import accumulation_dtype, active_rows

BLOCK_R = 32  # sorted rows per pass-1 program


@triton.jit
def _segment_sums_kernel(f_ptr, order_ptr, seg_ptr, partial_ptr, B, D, NSEG, ACC: tl.constexpr,
                         BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """partial[s] = sum of the sorted rows of segment s (segments of this row block only)."""
    first = tl.program_id(0) * BLOCK_R
    rows = first + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_mask, col_mask = rows < B, cols < D
    src = tl.load(order_ptr + rows, mask=row_mask, other=0).to(tl.int64)
    seg = tl.load(seg_ptr + rows, mask=row_mask, other=-1)
    x = tl.load(f_ptr + src[:, None] * D + cols[None, :], mask=row_mask[:, None] & col_mask[None, :], other=0.0)
    x = x.to(ACC)
    seg_lo = tl.load(seg_ptr + first)
    seg_hi = tl.load(seg_ptr + tl.minimum(first + BLOCK_R, B) - 1)
    for s in range(seg_lo, seg_hi + 1):
        part = tl.sum(tl.where((seg == s)[:, None], x, 0.0), axis=0)
        tl.store(partial_ptr + s * D + cols, part, mask=col_mask & (s < NSEG))  # NSEG: bounds guard


@triton.jit
def _class_reduce_kernel(partial_ptr, seg_ptr, starts_ptr, ends_ptr, out_ptr, D, NSEG, ACC: tl.constexpr,
                         BLOCK_D: tl.constexpr):
    """out[c, :D] = sum of class c's segments in order (0 if absent); out[c, D] = n_c."""
    c = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    start = tl.load(starts_ptr + c)
    end = tl.load(ends_ptr + c)
    present = end > start
    seg_lo = tl.load(seg_ptr + start, mask=present, other=0)
    seg_hi = tl.load(seg_ptr + end - 1, mask=present, other=-1)
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    for s in range(seg_lo, seg_hi + 1):
        acc += tl.load(partial_ptr + s * D + cols, mask=col_mask & (s < NSEG), other=0.0)
    row = out_ptr + c.to(tl.int64) * (D + 1)
    tl.store(row + cols, acc, mask=col_mask)
    tl.store(row + D, (end - start).to(ACC), mask=pid_d == 0)


@triton.jit
def _ema_apply_kernel(mean_ptr, sums_ptr, D, alpha_hi, alpha_lo, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """m_c <- alpha m_c + (1 - alpha) s_c / n_c for n_c > 0 (the batch mean rounded to m's dtype first).

    Float arguments reach a kernel as fp32, so alpha comes as fp32 ``hi + lo`` (48 bits for fp64).
    """
    alpha = tl.cast(alpha_hi, ACC) + tl.cast(alpha_lo, ACC)
    c = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    count = tl.load(sums_ptr + c * (D + 1) + D).to(ACC)
    if count > 0:
        sums = tl.load(sums_ptr + c * (D + 1) + cols, mask=col_mask, other=0.0).to(ACC)
        old = tl.load(mean_ptr + c * D + cols, mask=col_mask, other=0.0)
        batch_mean = (sums / count).to(old.dtype).to(ACC)
        new = batch_mean + alpha * (old.to(ACC) - batch_mean)
        tl.store(mean_ptr + c * D + cols, new.to(old.dtype), mask=col_mask)


def _tl_dtype(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block_d(dim):
    return min(triton.next_power_of_2(dim), 128)


def _segments(labels, num_classes):
    """Sorted order, segment id of every sorted row, and each class's [start, end) in sorted order.

    Inactive rows get the key C, so they form at most one extra label after the classes.
    """
    keys = torch.where(active_rows(labels, num_classes), labels, torch.full_like(labels, num_classes))
    sorted_labels, order = torch.sort(keys, stable=True)
    position = torch.arange(labels.shape[0], device=labels.device)
    is_start = position % BLOCK_R == 0
    is_start[1:] |= sorted_labels[1:] != sorted_labels[:-1]
    seg = torch.cumsum(is_start, 0) - 1
    classes = torch.arange(num_classes, device=labels.device, dtype=sorted_labels.dtype)
    starts = torch.searchsorted(sorted_labels, classes)
    ends = torch.searchsorted(sorted_labels, classes, right=True)
    return order, seg, starts, ends


def class_sums_triton(features, labels, num_classes):
    """C x (D + 1) per-class sums of ``features`` (B x D) with the counts in the last column."""
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need B x D features and B labels; got {tuple(features.shape)}, {tuple(labels.shape)}")
    batch, dim = features.shape
    acc = accumulation_dtype(features.dtype)
    out = torch.empty(num_classes, dim + 1, dtype=acc, device=features.device)
    if batch == 0:
        return out.zero_()
    features, labels = features.contiguous(), labels.contiguous()
    order, seg, starts, ends = _segments(labels, num_classes)
    row_blocks = triton.cdiv(batch, BLOCK_R)
    max_segments = min(batch, row_blocks + num_classes)  # each starts a block or a new key (C + 1 keys)
    partial = torch.empty(max_segments, dim, dtype=acc, device=features.device)
    block_d = _block_d(dim)
    acc_tl = _tl_dtype(acc)
    _segment_sums_kernel[(row_blocks, triton.cdiv(dim, block_d))](
        features, order, seg, partial, batch, dim, max_segments, ACC=acc_tl, BLOCK_R=BLOCK_R, BLOCK_D=block_d)
    _class_reduce_kernel[(num_classes, triton.cdiv(dim, block_d))](
        partial, seg, starts, ends, out, dim, max_segments, ACC=acc_tl, BLOCK_D=block_d)
    return out


def ema_apply_triton_(running_mean, sums_and_counts, alpha):
    """In place on ``running_mean`` (C x D): Eq. 15 for the classes whose count is nonzero."""
    num_classes, dim = running_mean.shape
    if tuple(sums_and_counts.shape) != (num_classes, dim + 1):
        raise ValueError(f"sums_and_counts must be {num_classes} x {dim + 1}; got {tuple(sums_and_counts.shape)}")
    target = running_mean if running_mean.is_contiguous() else running_mean.contiguous()
    compute = torch.promote_types(accumulation_dtype(running_mean.dtype), sums_and_counts.dtype)
    alpha = float(alpha)
    alpha_hi = struct.unpack("f", struct.pack("f", alpha))[0]  # alpha rounded to fp32, on the host
    block_d = _block_d(dim)
    _ema_apply_kernel[(num_classes, triton.cdiv(dim, block_d))](
        target, sums_and_counts.contiguous(), dim, alpha_hi, alpha - alpha_hi, ACC=_tl_dtype(compute), BLOCK_D=block_d)
    if target is not running_mean:
        running_mean.copy_(target)
    return running_mean
