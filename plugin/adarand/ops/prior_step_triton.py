"""Fused Triton kernels of AdaRand's prior update and their launcher (``prior_step.py`` states the equations and
makes the launcher the custom op ``adarand::prior_step_``).

Five launches: ``_prior_rows_kernel`` (one program per class: row norms, ``g_c = 1 - cos(mu_c, m_c)``,
the unit rows ``u_c`` and each row's share of the loss), two matmuls for ``U U^T U`` through the
C x C or D x D Gram matrix, ``_prior_adam_kernel`` (one program per class: the rest of the row's
share of the loss, ``u_c . (U U^T U)_c``, the gradient of ``L_mean + L_dist`` w.r.t. ``mu_c``, then Adam
on ``mu_c`` and its moments), and ``_prior_finish_kernel`` (one program: the loss's sum in a fixed
order and the step-count increment). The step count and ``applied`` are read from device
memory and the schedule's ``lr_t`` and Adam's bias corrections are computed in the kernel (in
float64), so the launches never change from step to step: CUDA-graph capturable, no host sync.
No atomics: bit-reproducible run to run.
"""
import math

import torch
import triton
import triton.language as tl

from .common import NORM_EPS, accumulation_dtype
from .triton_common import fp32_hi_lo, tl_dtype

SCHEDULE_CODES = {"constant": 0, "cosine_7_16": 1, "half_cosine": 2}  # the SCHEDULE of each of schedules.SCHEDULES


@triton.jit
def _prior_rows_kernel(mu_ptr, rm_ptr, unit_ptr, stats_ptr, row_loss_ptr, C, D, eps_hi, eps_lo, USE_MEAN: tl.constexpr,
                       USE_DIST: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """unit[c] = mu_c / max(|mu_c|, eps); stats[c] = (|mu_c|, max(|mu_c|, eps), g_c, |u_c|^2, max(|m_c|, eps));
    row_loss[c] = g_c^2 / C - |u_c|^4 / (C (C-1)) (the terms in use)."""
    c = tl.program_id(0).to(tl.int64)
    sq_mu = tl.zeros([BLOCK_D], dtype=ACC)
    sq_m = tl.zeros([BLOCK_D], dtype=ACC)
    dot = tl.zeros([BLOCK_D], dtype=ACC)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = cols < D
        x = tl.load(mu_ptr + c * D + cols, mask=mask, other=0.0).to(ACC)
        m = tl.load(rm_ptr + c * D + cols, mask=mask, other=0.0).to(ACC)
        sq_mu += x * x
        sq_m += m * m
        dot += x * m
    eps = tl.cast(eps_hi, ACC) + tl.cast(eps_lo, ACC)  # fp32 hi + lo: 1e-12 is not an fp32 number
    norm = tl.sqrt(tl.sum(sq_mu, axis=0))
    denom = tl.maximum(norm, eps)
    denom_m = tl.maximum(tl.sqrt(tl.sum(sq_m, axis=0)), eps)
    gap = 1.0 - tl.sum(dot, axis=0) / (denom * denom_m)
    self_sq = (norm / denom) * (norm / denom)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)
        mask = cols < D
        x = tl.load(mu_ptr + c * D + cols, mask=mask, other=0.0).to(ACC)
        tl.store(unit_ptr + c * D + cols, x / denom, mask=mask)
    tl.store(stats_ptr + c * 5 + 0, norm)
    tl.store(stats_ptr + c * 5 + 1, denom)
    tl.store(stats_ptr + c * 5 + 2, gap)
    tl.store(stats_ptr + c * 5 + 3, self_sq)
    tl.store(stats_ptr + c * 5 + 4, denom_m)
    row_loss = norm * 0.0
    if USE_MEAN:
        row_loss += gap * gap / C
    if USE_DIST:  # C > 1
        row_loss -= self_sq * self_sq / (C * (C - 1.0))
    tl.store(row_loss_ptr + c, row_loss)


@triton.jit
def _schedule_factor(t_prev, TOTAL, WARMUP, SCHEDULE: tl.constexpr):
    """lr factor after ``t_prev`` updates (float64): ``schedules.lr_factor``'s expressions, the schedule by its code.

    Constant 1; ``max(0, cos(pi 7/16 p))``, ``p = (t - W) / max(T - W, 1)`` clipped to [0, 1], after
    ``t / max(W, 1)`` while ``t < W``; or ``(1 + cos(pi min(t, T)/T))/2``.
    ``tests/ops/test_schedule_kernel.py`` holds it to ``schedules.lr_factor`` at every step.
    """
    if SCHEDULE == 1:
        progress = tl.minimum(tl.maximum((t_prev - WARMUP) / tl.maximum(TOTAL - WARMUP, 1.0), 0.0), 1.0)
        factor = tl.maximum(tl.cos(progress * (3.141592653589793 * 7.0 / 16.0)), 0.0)
        factor = tl.where(t_prev < WARMUP, t_prev / tl.maximum(WARMUP, 1.0), factor)
    elif SCHEDULE == 2:
        factor = 0.5 * (1.0 + tl.cos(3.141592653589793 * tl.minimum(t_prev, TOTAL) / TOTAL))
    else:
        factor = t_prev * 0.0 + 1.0
    return factor


@triton.jit
def _pull_block(unit_ptr, rm_ptr, gram_unit_ptr, offsets, mask, coef_mean, coef_dist, self_sq,
                USE_MEAN: tl.constexpr, USE_DIST: tl.constexpr, ACC: tl.constexpr):
    """One block of row c: ``(u_c, w_c, (U U^T U)_c)``, w_c = coef_mean m_c + coef_dist ((U U^T U)_c - |u_c|^2 u_c)
    (a term left out is 0; so is ``(U U^T U)_c`` without L_dist)."""
    u = tl.load(unit_ptr + offsets, mask=mask, other=0.0)
    w = u * 0.0
    gram_u = u * 0.0
    if USE_MEAN:
        w += coef_mean * tl.load(rm_ptr + offsets, mask=mask, other=0.0).to(ACC)
    if USE_DIST:
        gram_u = tl.load(gram_unit_ptr + offsets, mask=mask, other=0.0)
        w += coef_dist * (gram_u - self_sq * u)
    return u, w, gram_u


@triton.jit
def _prior_adam_kernel(mu_ptr, rm_ptr, unit_ptr, gram_unit_ptr, stats_ptr, row_loss_ptr, avg_ptr, avg_sq_ptr,
                       steps_ptr, applied_ptr, C, D, norm_eps_hi, norm_eps_lo, lr_hi, lr_lo, log_b1_hi, log_b1_lo,
                       log_b2_hi, log_b2_lo, one_b1_hi, one_b1_lo, b2_hi, b2_lo, one_b2_hi, one_b2_lo, eps_hi,
                       eps_lo, TOTAL, WARMUP, SCHEDULE: tl.constexpr, HAS_APPLIED: tl.constexpr,
                       USE_MEAN: tl.constexpr, USE_DIST: tl.constexpr, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_c = (w_c - [|mu_c| >= eps] (u_c . w_c) u_c) / max(|mu_c|, eps),
    w_c = -(2/C) g_c m_c / max(|m_c|, eps) + 4 ((U U^T U)_c - |u_c|^2 u_c) / (C (C-1)); then Adam on row c.
    With L_dist, row_loss[c] gains u_c . (U U^T U)_c / (C (C-1)): summed over c, ||U U^T||_F^2 / (C (C-1)).

    Float arguments reach a kernel as fp32, so lr, the betas and the eps come as fp32 ``hi + lo`` pairs.
    """
    c = tl.program_id(0).to(tl.int64)
    norm = tl.load(stats_ptr + c * 5 + 0)
    denom = tl.load(stats_ptr + c * 5 + 1)
    gap = tl.load(stats_ptr + c * 5 + 2)
    self_sq = tl.load(stats_ptr + c * 5 + 3)
    denom_m = tl.load(stats_ptr + c * 5 + 4)
    coef_mean = -2.0 * gap / (C * denom_m)  # times m_c
    coef_dist = gap * 0.0  # in ACC (a literal quotient alone would be fp32)
    if USE_DIST:  # C > 1
        coef_dist = (coef_dist + 4.0) / (C * (C - 1.0))
    # the schedule and the bias corrections, from the step count in device memory, in float64
    t_prev = tl.load(steps_ptr).to(tl.float64)
    t = t_prev + 1.0
    lr = tl.cast(lr_hi, tl.float64) + tl.cast(lr_lo, tl.float64)
    lr_t = lr * _schedule_factor(t_prev, tl.cast(TOTAL, tl.float64), tl.cast(WARMUP, tl.float64), SCHEDULE)
    bias1 = 1.0 - tl.exp(t * (tl.cast(log_b1_hi, tl.float64) + tl.cast(log_b1_lo, tl.float64)))
    bias2 = 1.0 - tl.exp(t * (tl.cast(log_b2_hi, tl.float64) + tl.cast(log_b2_lo, tl.float64)))
    step_size = (lr_t / bias1).to(ACC)
    bias2 = bias2.to(ACC)
    one_b1 = tl.cast(one_b1_hi, ACC) + tl.cast(one_b1_lo, ACC)
    beta2 = tl.cast(b2_hi, ACC) + tl.cast(b2_lo, ACC)
    one_b2 = tl.cast(one_b2_hi, ACC) + tl.cast(one_b2_lo, ACC)
    adam_eps = tl.cast(eps_hi, ACC) + tl.cast(eps_lo, ACC)
    keep = 0
    if HAS_APPLIED:
        keep = (tl.load(applied_ptr) == 0).to(tl.int32)
    radial = tl.zeros([BLOCK_D], dtype=ACC)
    gram_sq = tl.zeros([BLOCK_D], dtype=ACC)
    for start in range(0, D, BLOCK_D):  # pass 1: u_c . w_c, and u_c . (U U^T U)_c, row c's share of ||U U^T||_F^2
        cols = start + tl.arange(0, BLOCK_D)
        mask = cols < D
        u, w, gram_u = _pull_block(unit_ptr, rm_ptr, gram_unit_ptr, c * D + cols, mask, coef_mean, coef_dist, self_sq,
                                   USE_MEAN, USE_DIST, ACC)
        gram_sq += u * gram_u
        radial += u * w
    if USE_DIST:
        tl.store(row_loss_ptr + c, tl.load(row_loss_ptr + c) + tl.sum(gram_sq, axis=0) * coef_dist / 4.0)
    dot = tl.sum(radial, axis=0)
    dot = tl.where(norm >= tl.cast(norm_eps_hi, ACC) + tl.cast(norm_eps_lo, ACC), dot, 0.0)
    for start in range(0, D, BLOCK_D):  # pass 2: the gradient, then Adam
        cols = start + tl.arange(0, BLOCK_D)
        mask = cols < D
        u, w, _ = _pull_block(unit_ptr, rm_ptr, gram_unit_ptr, c * D + cols, mask, coef_mean, coef_dist, self_sq,
                              USE_MEAN, USE_DIST, ACC)
        grad = (w - dot * u) / denom
        p_old = tl.load(mu_ptr + c * D + cols, mask=mask, other=0.0)
        m_old = tl.load(avg_ptr + c * D + cols, mask=mask, other=0.0)
        v_old = tl.load(avg_sq_ptr + c * D + cols, mask=mask, other=0.0)
        m = m_old.to(ACC) + one_b1 * (grad - m_old.to(ACC))
        v = v_old.to(ACC) * beta2 + one_b2 * grad * grad
        p = p_old.to(ACC) - step_size * m / (tl.sqrt(v / bias2) + adam_eps)
        if keep == 0:
            tl.store(mu_ptr + c * D + cols, p.to(p_old.dtype), mask=mask)
            tl.store(avg_ptr + c * D + cols, m.to(m_old.dtype), mask=mask)
            tl.store(avg_sq_ptr + c * D + cols, v.to(v_old.dtype), mask=mask)


@triton.jit
def _prior_finish_kernel(row_loss_ptr, loss_ptr, steps_ptr, C, BLOCK_C: tl.constexpr):
    """One program, after the update: loss = sum of the row losses (a fixed order); the step count + 1."""
    total = tl.zeros([BLOCK_C], dtype=row_loss_ptr.dtype.element_ty)
    for start in range(0, C, BLOCK_C):
        offsets = start + tl.arange(0, BLOCK_C)
        total += tl.load(row_loss_ptr + offsets, mask=offsets < C, other=0.0)
    tl.store(loss_ptr, tl.sum(total, axis=0).to(loss_ptr.dtype.element_ty))
    tl.store(steps_ptr, tl.load(steps_ptr) + 1)


def prior_step_triton_(mu: torch.Tensor, running_mean: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                       num_steps: torch.Tensor, applied: torch.Tensor | None, lr: float, beta1: float, beta2: float,
                       eps: float, schedule: str, total_steps: int | None, use_mean: bool,
                       use_dist: bool, warmup: int = 0) -> torch.Tensor:
    """The fused prior update in place (see ``prior_step.prior_step_``); returns the loss before it."""
    num_classes, dim = mu.shape
    for name, tensor in (("running_mean", running_mean), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if tuple(tensor.shape) != (num_classes, dim):
            raise ValueError(f"{name} must be {num_classes} x {dim}; got {tuple(tensor.shape)}")
    for name, tensor in (("mu", mu), ("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)):
        if not tensor.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is updated in place)")
    acc = accumulation_dtype(mu.dtype)
    use_dist = bool(use_dist) and num_classes > 1
    unit = torch.empty(num_classes, dim, dtype=acc, device=mu.device)
    stats = torch.empty(num_classes, 5, dtype=acc, device=mu.device)
    row_loss = torch.empty(num_classes, dtype=acc, device=mu.device)
    block_d = min(triton.next_power_of_2(dim), 512)
    acc_tl = tl_dtype(acc)
    running_mean = running_mean.contiguous()
    norm_eps = fp32_hi_lo(NORM_EPS)
    _prior_rows_kernel[(num_classes,)](mu, running_mean, unit, stats, row_loss, num_classes, dim, *norm_eps,
                                       USE_MEAN=bool(use_mean), USE_DIST=use_dist, ACC=acc_tl, BLOCK_D=block_d)
    gram_unit = unit  # unused without L_dist
    if use_dist:
        gram = unit @ unit.T if num_classes <= dim else unit.T @ unit
        gram_unit = gram @ unit if num_classes <= dim else unit @ gram
    lr_hi, lr_lo = fp32_hi_lo(float(lr))
    b1_hi, b1_lo = fp32_hi_lo(math.log(beta1))
    b2_hi, b2_lo = fp32_hi_lo(math.log(beta2))
    _prior_adam_kernel[(num_classes,)](
        mu, running_mean, unit, gram_unit, stats, row_loss, exp_avg, exp_avg_sq, num_steps,
        applied if applied is not None else num_steps, num_classes, dim, *norm_eps, lr_hi, lr_lo, b1_hi, b1_lo,
        b2_hi, b2_lo, *fp32_hi_lo(1.0 - beta1), *fp32_hi_lo(beta2), *fp32_hi_lo(1.0 - beta2), *fp32_hi_lo(float(eps)),
        1 if total_steps is None else int(total_steps), int(warmup),
        SCHEDULE=0 if total_steps is None else SCHEDULE_CODES[schedule],
        HAS_APPLIED=applied is not None, USE_MEAN=bool(use_mean), USE_DIST=use_dist, ACC=acc_tl, BLOCK_D=block_d)
    loss = mu.new_empty(())
    _prior_finish_kernel[(1,)](row_loss, loss, num_steps, num_classes, BLOCK_C=1024)
    return loss
