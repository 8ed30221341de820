"""The eps the fused target-loss kernels draw, written out by a kernel of the same tiling (tests only)."""
import torch
import triton
import triton.language as tl

from adarand.ops.target_loss_triton import _NOISE_CODE, _noise4, _store_block, _tiles


@triton.jit
def _noise_kernel(seed_ptr, out_ptr, B, D, NOISE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
    """Write the eps the loss kernels draw for every element (i, d)."""
    Q: tl.constexpr = BLOCK_D // 4
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    base = tl.program_id(1) * BLOCK_D + tl.arange(0, Q)
    e0, e1, e2, e3 = _noise4(tl.load(seed_ptr), rows[:, None] * D + base[None, :], NOISE)
    _store_block(out_ptr, B, D, rows, base, e0)
    _store_block(out_ptr, B, D, rows, base + Q, e1)
    _store_block(out_ptr, B, D, rows, base + 2 * Q, e2)
    _store_block(out_ptr, B, D, rows, base + 3 * Q, e3)


def noise_from_seed(seed, shape, noise="normal") -> torch.Tensor:
    """The float32 eps (``shape`` = (B, D)) the loss kernels draw for ``seed`` (1-element int64)."""
    batch, dim = shape
    out = torch.empty(batch, dim, dtype=torch.float32, device=seed.device)
    if out.numel():
        block_b, block_d, grid, warps = _tiles(batch, dim)
        _noise_kernel[grid](seed, out, batch, dim, NOISE=_NOISE_CODE[noise], BLOCK_B=block_b, BLOCK_D=block_d,
                            num_warps=warps)
    return out
