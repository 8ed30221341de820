"""The prior kernel's lr factor at given steps, written out by a kernel that calls its schedule (tests only)."""
import torch
import triton
import triton.language as tl

from adarand.ops.prior_step_triton import SCHEDULE_CODES, _schedule_factor


@triton.jit
def _schedule_kernel(steps_ptr, out_ptr, N, TOTAL, WARMUP, SCHEDULE: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = the factor after steps[i] updates, in float64, as ``_prior_adam_kernel`` computes it."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < N
    t_prev = tl.load(steps_ptr + offsets, mask=mask, other=0).to(tl.float64)
    factor = _schedule_factor(t_prev, tl.cast(TOTAL, tl.float64), tl.cast(WARMUP, tl.float64), SCHEDULE)
    tl.store(out_ptr + offsets, factor, mask=mask)


def kernel_lr_factor(schedule: str, steps: torch.Tensor, total: int, warmup: int = 0) -> torch.Tensor:
    """float64 factors of ``schedule`` at ``steps`` (int64, on the kernels' device), from the Triton schedule."""
    out = torch.empty(steps.shape, dtype=torch.float64, device=steps.device)
    block = 256
    _schedule_kernel[(triton.cdiv(steps.numel(), block),)](steps, out, steps.numel(), total, warmup,
                                                          SCHEDULE=SCHEDULE_CODES[schedule], BLOCK=block)
    return out
