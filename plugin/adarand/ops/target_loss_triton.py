"""Fused Triton kernels of the random-target loss ``sum_{i active, d} (f_id - r_id)^2 / (n D)``.

``r_i = mu_{y_i} + sigma_{y_i} * eps_i`` is never stored. The forward kernel draws
``eps`` in registers with Philox (``tl.randn4x`` / ``tl.rand4x``: four draws per call),
keyed by a 64-bit seed and an element counter; the backward kernel regenerates the
same ``eps`` from the same seed and writes ``dL/df = g * 2 (f - r) / (B D)``.

This module holds the kernels and their launchers only. ``target_loss.py`` makes the launchers the
custom ops ``adarand::target_loss_fwd`` / ``adarand::target_loss_bwd`` with their autograd formula
(so ``torch.compile`` keeps them in its graph) and checks the inputs. The seed is drawn there by
torch's RNG on the device and read by the kernels from memory: no host sync, and the launch is
CUDA-graph capturable. The
loss is reduced deterministically: one partial sum per program, then a one-program
finishing kernel sums the partials (and the active and bad row counts) in a fixed order
(no float atomics).

Row i is active when ``0 <= y_i < C`` (see ``target_loss``): inactive rows (IGNORE_INDEX,
or a label out of range) load no prior row, add nothing and get a zero gradient. The
forward kernel also writes each program's active-row count, so ``n`` stays on the device.
"""
import torch
import triton
import triton.language as tl

from .common import IGNORE_INDEX as _IGNORE, accumulation_dtype
from .triton_common import tl_dtype

_NOISE_CODE = {"normal": 0, "uniform": 1}
IGNORE_INDEX = tl.constexpr(_IGNORE)


@triton.jit
def _noise4(seed, counters, NOISE: tl.constexpr):
    """Four float32 noise blocks from one Philox call per counter: N(0, 1) (NOISE = 0) or U[-0.5, 0.5)."""
    if NOISE == 0:
        e0, e1, e2, e3 = tl.randn4x(seed, counters)
    else:
        e0, e1, e2, e3 = tl.rand4x(seed, counters)
        e0, e1, e2, e3 = e0 - 0.5, e1 - 0.5, e2 - 0.5, e3 - 0.5
    return e0, e1, e2, e3


@triton.jit
def _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, cols, y, active, eps, HAS_MU: tl.constexpr,
              ACC: tl.constexpr):
    """``f - (mu_y + sigma_y * eps)`` on a rows x cols block, in the ACC dtype (0 off the active rows)."""
    mask = active[:, None] & (cols < D)[None, :]
    f = tl.load(f_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0).to(ACC)
    if HAS_MU:
        prior_offsets = y[:, None] * D + cols[None, :]
        mu = tl.load(mu_ptr + prior_offsets, mask=mask, other=0.0).to(ACC)
        sigma = tl.load(sigma_ptr + prior_offsets, mask=mask, other=0.0).to(ACC)
        f = f - (mu + sigma * eps.to(ACC))
    return tl.where(mask, f, 0.0)


@triton.jit
def _tile(B, D, C, labels_ptr, seed_ptr, HAS_LABELS: tl.constexpr, HAS_MU: tl.constexpr, NOISE: tl.constexpr,
          BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """This program's rows, the first of its 4 column blocks, the labels, the active rows and the noise.

    Column block k holds columns ``base + k * BLOCK_D / 4``; element (i, base_j + k BLOCK_D / 4)
    takes output k of the Philox counter ``i * D + base_j``, so one call serves 4 elements.
    A row is active when ``0 <= y < C``; inactive rows read class 0's pointers, never loaded. A row is
    *bad* when its label is neither active nor IGNORE_INDEX.
    Without a prior (``HAS_MU`` false) there is no noise (FNP); without labels every row is active.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    base = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D // 4)
    active = rows < B
    bad = rows < 0
    y = rows.to(tl.int64) * 0
    if HAS_LABELS:
        y = tl.load(labels_ptr + rows, mask=active, other=IGNORE_INDEX).to(tl.int64)
        bad = (y != IGNORE_INDEX) & ((y < 0) | (y >= C))
        active = active & (y >= 0) & (y < C)
        y = tl.where(active, y, 0)
    if HAS_MU:
        e0, e1, e2, e3 = _noise4(tl.load(seed_ptr), rows[:, None] * D + base[None, :], NOISE)
    else:
        e0, e1, e2, e3 = 0.0, 0.0, 0.0, 0.0
    return rows, base, y, active, bad, e0, e1, e2, e3


@triton.jit
def _target_loss_fwd_kernel(f_ptr, labels_ptr, mu_ptr, sigma_ptr, seed_ptr, partial_ptr, count_ptr, bad_ptr, B, D,
                            C, HAS_LABELS: tl.constexpr, HAS_MU: tl.constexpr, NOISE: tl.constexpr,
                            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """partial[program] = sum over its tile of (f - r)^2; count[program], bad[program] = its active and its bad
    rows (column block 0; 0 in the others)."""
    Q: tl.constexpr = BLOCK_D // 4
    rows, base, y, active, bad, e0, e1, e2, e3 = _tile(B, D, C, labels_ptr, seed_ptr, HAS_LABELS, HAS_MU, NOISE,
                                                  BLOCK_B, BLOCK_D)
    d0 = _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base, y, active, e0, HAS_MU, ACC)
    d1 = _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + Q, y, active, e1, HAS_MU, ACC)
    d2 = _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + 2 * Q, y, active, e2, HAS_MU, ACC)
    d3 = _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + 3 * Q, y, active, e3, HAS_MU, ACC)
    square = d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3
    program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    tl.store(partial_ptr + program, tl.sum(tl.sum(square, axis=1), axis=0))
    first_column_block = (tl.program_id(1) == 0).to(tl.int32)
    tl.store(count_ptr + program, tl.sum(active.to(tl.int32), axis=0) * first_column_block)
    tl.store(bad_ptr + program, tl.sum(bad.to(tl.int32), axis=0) * first_column_block)


@triton.jit
def _target_loss_finish_kernel(partial_ptr, count_ptr, bad_ptr, loss_ptr, n_ptr, bad_total_ptr, P, D,
                               ACC: tl.constexpr, BLOCK_P: tl.constexpr):
    """One program: loss = sum(partial) / (max(n, 1) D), n = sum(count), bad_total = sum(bad), in a fixed order."""
    total = tl.zeros([BLOCK_P], dtype=ACC)
    n = tl.zeros([BLOCK_P], dtype=tl.int64)
    bad = tl.zeros([BLOCK_P], dtype=tl.int64)
    for start in range(0, P, BLOCK_P):
        offsets = start + tl.arange(0, BLOCK_P)
        mask = offsets < P
        total += tl.load(partial_ptr + offsets, mask=mask, other=0.0)
        n += tl.load(count_ptr + offsets, mask=mask, other=0).to(tl.int64)
        bad += tl.load(bad_ptr + offsets, mask=mask, other=0).to(tl.int64)
    count = tl.sum(n, axis=0)
    tl.store(loss_ptr, tl.sum(total, axis=0) / (tl.maximum(count, 1).to(ACC) * D))
    tl.store(n_ptr, count)
    tl.store(bad_total_ptr, tl.sum(bad, axis=0))


@triton.jit
def _store_block(ptr, B, D, rows, cols, value):
    mask = (rows < B)[:, None] & (cols < D)[None, :]
    tl.store(ptr + rows[:, None] * D + cols[None, :], value.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _target_loss_bwd_kernel(f_ptr, labels_ptr, mu_ptr, sigma_ptr, seed_ptr, grad_out_ptr, count_ptr, grad_f_ptr,
                            B, D, C, HAS_LABELS: tl.constexpr, HAS_MU: tl.constexpr, NOISE: tl.constexpr,
                            ACC: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad_f = grad_out * 2 (f - r) / (max(n, 1) D) on active rows (0 elsewhere), r regenerated from the seed."""
    Q: tl.constexpr = BLOCK_D // 4
    rows, base, y, active, bad, e0, e1, e2, e3 = _tile(B, D, C, labels_ptr, seed_ptr, HAS_LABELS, HAS_MU, NOISE,
                                                       BLOCK_B, BLOCK_D)
    count = tl.maximum(tl.load(count_ptr), 1).to(ACC)
    g = tl.load(grad_out_ptr).to(ACC) * 2.0 / (count * D)
    _store_block(grad_f_ptr, B, D, rows, base,
                 g * _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base, y, active, e0, HAS_MU, ACC))
    _store_block(grad_f_ptr, B, D, rows, base + Q,
                 g * _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + Q, y, active, e1, HAS_MU, ACC))
    _store_block(grad_f_ptr, B, D, rows, base + 2 * Q,
                 g * _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + 2 * Q, y, active, e2, HAS_MU, ACC))
    _store_block(grad_f_ptr, B, D, rows, base + 3 * Q,
                 g * _residual(f_ptr, mu_ptr, sigma_ptr, B, D, rows, base + 3 * Q, y, active, e3, HAS_MU, ACC))


def _tiles(batch, dim):
    """Tile shape, grid and warps: at most 2048 elements, as wide as D allows (4 to 512 columns).

    The noise of element (i, d) depends on the tile width, a function of D alone, so the
    forward and backward kernels (and the tests' noise probe, tests/ops/noise_probe.py) draw the same eps.
    """
    block_d = max(4, min(triton.next_power_of_2(dim), 512))
    block_b = min(triton.next_power_of_2(max(batch, 1)), max(1, 2048 // block_d))
    warps = 8 if block_b * block_d >= 2048 else 4
    return block_b, block_d, (triton.cdiv(batch, block_b), triton.cdiv(dim, block_d)), warps


def _launch_args(features, labels, mu, sigma, seed):
    """Pointers for the kernels; the features stand in for the unread ones (no labels, or no prior)."""
    lab = features if labels is None else labels
    if mu is None:
        return (lab, features, features, features), labels is not None, False
    return (lab, mu, sigma, seed), True, True


def target_loss_fwd_triton(features: torch.Tensor, labels: torch.Tensor | None, mu: torch.Tensor | None,
                           sigma: torch.Tensor | None, seed: torch.Tensor | None, noise: str,
                           num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, n, bad)``: the fused forward (the kernels of ``adarand::target_loss_fwd``); n = active rows,
    bad = rows labelled outside [0, C) other than IGNORE_INDEX, both int64. Two launches."""
    acc = accumulation_dtype(features.dtype)
    batch, dim = features.shape
    loss = features.new_empty((), dtype=acc)
    count, bad = (features.new_empty((), dtype=torch.int64) for _ in range(2))
    (lab, m, s, sd), has_labels, has_mu = _launch_args(features, labels, mu, sigma, seed)
    block_b, block_d, grid, warps = _tiles(batch, dim)
    programs = grid[0] * grid[1]
    partials = torch.empty(programs, dtype=acc, device=features.device)
    counts, bads = (torch.empty(programs, dtype=torch.int32, device=features.device) for _ in range(2))
    if programs:
        _target_loss_fwd_kernel[grid](features, lab, m, s, sd, partials, counts, bads, batch, dim, num_classes,
                                      HAS_LABELS=has_labels, HAS_MU=has_mu, NOISE=_NOISE_CODE[noise],
                                      ACC=tl_dtype(acc), BLOCK_B=block_b, BLOCK_D=block_d,
                                      num_warps=warps)
    _target_loss_finish_kernel[(1,)](partials, counts, bads, loss, count, bad, programs, dim,
                                     ACC=tl_dtype(acc), BLOCK_P=1024)
    return loss, count, bad


def target_loss_bwd_triton(grad_out: torch.Tensor, features: torch.Tensor, labels: torch.Tensor | None,
                           mu: torch.Tensor | None, sigma: torch.Tensor | None, seed: torch.Tensor | None,
                           count: torch.Tensor, noise: str, num_classes: int) -> torch.Tensor:
    """``dL/df`` (the kernel of ``adarand::target_loss_bwd``), the noise regenerated from ``seed``."""
    grad_f = torch.empty_like(features)
    batch, dim = features.shape
    if batch:
        (lab, m, s, sd), has_labels, has_mu = _launch_args(features, labels, mu, sigma, seed)
        block_b, block_d, grid, warps = _tiles(batch, dim)
        _target_loss_bwd_kernel[grid](features, lab, m, s, sd, grad_out.contiguous(), count, grad_f, batch,
                                      dim, num_classes, HAS_LABELS=has_labels, HAS_MU=has_mu,
                                      NOISE=_NOISE_CODE[noise], ACC=tl_dtype(accumulation_dtype(features.dtype)),
                                      BLOCK_B=block_b, BLOCK_D=block_d, num_warps=warps)
    return grad_f
