"""Fused Triton kernels of the per-class running means (AdaRand Eq. 14-15).

``class_sums_triton``: ``out[c] = [sum_{i: y_i = c} f_i, n_c]`` (C x (D + 1)). The rows are cut
into R row blocks, R fixed by (B, C, D) (:func:`num_row_blocks`): one up to SINGLE_BLOCK_ROWS rows
(a classification batch, 8192 detection ROIs), else about one per ROWS_PER_BLOCK rows (a
segmentation batch of 10^5-10^6 pixels). Program (class, column block, row block) scans its
block's labels BLOCK_R rows at a time and adds the rows of its class in row order (a fixed
tree inside each BLOCK_R rows); a step without a row of the class loads no features. With
one row block that is the whole sum, one launch; with R > 1 each program writes its block's
partial sums into an R x C x (D + 1) buffer and a second kernel adds the R partials of each
class in a fixed order. No atomics, no sort: bit-reproducible whatever
``torch.use_deterministic_algorithms`` says, and every shape is fixed by (B, C, D): no host
sync. Rows whose label is outside [0, C) (``IGNORE_INDEX`` among them) match no class. The
kernel that writes the final sums flags the non-finite ones, so the EMA's finiteness guard
costs no launch of its own.

``ema_apply_triton_``: ``m_c <- alpha m_c + (1 - alpha) s_c / n_c`` where ``n_c > 0``, and
nothing anywhere when a flag says a sum is not finite (a skipped batch).
"""
import torch
import triton
import triton.language as tl

from .common import accumulation_dtype
from .triton_common import fp32_hi_lo, tl_dtype

BLOCK_R = 32  # rows per step of the class-sums scan
SINGLE_BLOCK_ROWS = 8192  # batches up to this many rows are summed in one row block (one launch)
ROWS_PER_BLOCK = 1024  # above it, about this many rows per row block ...
MAX_ROW_BLOCKS = 1024  # ... and at most this many row blocks,
MAX_PARTIALS = 2**22  # with at most this many partial sums (16 MiB in fp32)
BLOCK_P = 32  # partials added per step of the finishing kernel


@triton.jit
def _store_sums(row, acc, count, cols, col_mask, flag, pid_d, D, FLAGS: tl.constexpr):
    """Write one class's sums (and, from column block 0, its count) to ``row``; with FLAGS, count the
    non-finite sums into ``flag``."""
    tl.store(row + cols, acc, mask=col_mask)
    tl.store(row + D, count, mask=pid_d == 0)
    if FLAGS:
        not_finite = ((acc - acc) != 0) & col_mask  # inf - inf and NaN - NaN are NaN
        tl.store(flag, tl.sum(not_finite.to(tl.int32), axis=0))


@triton.jit
def _class_sums_kernel(f_ptr, labels_ptr, out_ptr, flags_ptr, B, D, ROWS, ACC: tl.constexpr, BLOCK_R: tl.constexpr,
                       BLOCK_D: tl.constexpr, FINAL: tl.constexpr):
    """out[r, c, :D] = sum of the rows labelled c among rows [r ROWS, (r + 1) ROWS) (in row order, BLOCK_R rows at
    a time); out[r, c, D] = their count. FINAL (one row block): out is C x (D + 1) and flags[c, block] = how many of
    this program's sums are not finite.

    Program (c, column block, r) scans the labels of row block r; a step holding no row of class c loads no
    features. Rows labelled outside [0, C) (IGNORE_INDEX among them) equal no program's class.
    """
    c = tl.program_id(0)
    pid_d = tl.program_id(1)
    block = tl.program_id(2)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    count = tl.zeros([BLOCK_R], dtype=tl.int32)
    row_start = block * ROWS
    for start in range(row_start, tl.minimum(row_start + ROWS, B), BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        match = tl.load(labels_ptr + rows, mask=rows < B, other=-1) == c
        count += match.to(tl.int32)
        if tl.sum(match.to(tl.int32), axis=0) > 0:
            x = tl.load(f_ptr + rows[:, None].to(tl.int64) * D + cols[None, :],
                        mask=match[:, None] & col_mask[None, :], other=0.0)
            acc += tl.sum(x.to(ACC), axis=0)
    row = out_ptr + (block.to(tl.int64) * tl.num_programs(0) + c) * (D + 1)
    _store_sums(row, acc, tl.sum(count, axis=0).to(ACC), cols, col_mask, flags_ptr + c * tl.num_programs(1) + pid_d,
                pid_d, D, FINAL)


@triton.jit
def _class_sums_finish_kernel(partial_ptr, out_ptr, flags_ptr, R, D, ACC: tl.constexpr, BLOCK_P: tl.constexpr,
                              BLOCK_D: tl.constexpr):
    """out[c] = sum over r of partial[r, c] (R x C x (D + 1)): BLOCK_P row blocks at a time with a fixed tree, the
    steps in row-block order; flags[c, block] = how many of this program's sums are not finite."""
    c = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    col_mask = cols < D
    stride = tl.num_programs(0).to(tl.int64) * (D + 1)  # between row blocks
    acc = tl.zeros([BLOCK_D], dtype=ACC)
    count = tl.zeros([BLOCK_P], dtype=ACC)
    for start in range(0, R, BLOCK_P):
        blocks = start + tl.arange(0, BLOCK_P)
        part = partial_ptr + blocks.to(tl.int64) * stride + c * (D + 1)
        x = tl.load(part[:, None] + cols[None, :], mask=(blocks < R)[:, None] & col_mask[None, :], other=0.0)
        acc += tl.sum(x, axis=0)
        count += tl.load(part + D, mask=(blocks < R) & (pid_d == 0), other=0.0)
    row = out_ptr + c.to(tl.int64) * (D + 1)
    _store_sums(row, acc, tl.sum(count, axis=0), cols, col_mask, flags_ptr + c * tl.num_programs(1) + pid_d, pid_d,
                D, True)


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


def num_row_blocks(batch: int, num_classes: int, dim: int) -> int:
    """Row blocks of the class sums of a B x D batch with C classes: 1 up to SINGLE_BLOCK_ROWS rows, else one per
    ROWS_PER_BLOCK rows, at most MAX_ROW_BLOCKS and at most MAX_PARTIALS / (C (D + 1)) (at least 1)."""
    if batch <= SINGLE_BLOCK_ROWS:
        return 1
    return max(1, min(triton.cdiv(batch, ROWS_PER_BLOCK), MAX_ROW_BLOCKS, MAX_PARTIALS // (num_classes * (dim + 1))))


def row_split(batch: int, num_classes: int, dim: int, row_blocks: int | None = None) -> tuple[int, int]:
    """``(R, rows)``: the row blocks the class sums use and the rows in each (a multiple of BLOCK_R), for
    ``row_blocks`` asked (default :func:`num_row_blocks`); fewer than asked where the last would be empty."""
    if row_blocks is None:
        row_blocks = num_row_blocks(batch, num_classes, dim)
    if row_blocks < 1:
        raise ValueError(f"row_blocks must be at least 1; got {row_blocks}")
    rows = triton.cdiv(triton.cdiv(batch, row_blocks), BLOCK_R) * BLOCK_R
    return (max(1, triton.cdiv(batch, rows)) if rows else 1), rows


def class_sums_and_flags_triton(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                                row_blocks: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sums, flags)``: the C x (D + 1) per-class sums of ``features`` (B x D) with the counts in the last
    column, and per (class, column block) the number of non-finite sums (int32).

    ``row_blocks``: how many row blocks to cut the batch into (:func:`row_split`). One launch with one row
    block, two with more.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need B x D features and B labels; got {tuple(features.shape)}, {tuple(labels.shape)}")
    batch, dim = features.shape
    row_blocks, rows = row_split(batch, num_classes, dim, row_blocks)
    acc = accumulation_dtype(features.dtype)
    block_d = _block_d(dim)
    grid = (num_classes, triton.cdiv(dim, block_d))
    out = torch.empty(num_classes, dim + 1, dtype=acc, device=features.device)
    flags = torch.empty(grid, dtype=torch.int32, device=features.device)
    partial = out if row_blocks == 1 else torch.empty(row_blocks, num_classes, dim + 1, dtype=acc,
                                                      device=features.device)
    _class_sums_kernel[(*grid, row_blocks)](features.contiguous(), labels.contiguous(), partial, flags, batch, dim,
                                            rows, ACC=tl_dtype(acc), BLOCK_R=BLOCK_R, BLOCK_D=block_d,
                                            FINAL=row_blocks == 1)
    if row_blocks > 1:
        _class_sums_finish_kernel[grid](partial, out, flags, row_blocks, dim, ACC=tl_dtype(acc), BLOCK_P=BLOCK_P,
                                        BLOCK_D=block_d)
    return out, flags


def class_sums_triton(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                      row_blocks: int | None = None) -> torch.Tensor:
    """C x (D + 1) per-class sums of ``features`` (B x D) with the counts in the last column."""
    return class_sums_and_flags_triton(features, labels, num_classes, row_blocks)[0]


def ema_apply_triton_(running_mean: torch.Tensor, sums_and_counts: torch.Tensor, alpha: float,
                      flags: torch.Tensor | None = None, applied: torch.Tensor | None = None) -> torch.Tensor:
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
