"""Host-side helpers shared by the Triton kernels' launchers (imported only where Triton is installed)."""
import struct
from typing import Any

import torch
import triton.language as tl


def tl_dtype(dtype: torch.dtype) -> Any:
    """The kernels' accumulation type for a torch dtype: ``tl.float64`` for float64, else ``tl.float32``."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def fp32_hi_lo(value: float) -> tuple[float, float]:
    """``value`` as fp32 ``hi + lo`` (48 bits), the way float arguments reach a kernel (as fp32)."""
    hi = struct.unpack("f", struct.pack("f", value))[0]
    return hi, value - hi
