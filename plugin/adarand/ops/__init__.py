"""Kernels of the prior: PyTorch reference path and fused Triton path, one dispatch point."""
from .backend import HAS_TRITON, get_backend, set_backend
from .class_ema import class_ema_, class_sums, ema_apply_
from .target_loss import NOISES, draw_noise, target_loss

__all__ = [
    "HAS_TRITON", "NOISES", "class_ema_", "class_sums", "draw_noise", "ema_apply_",
    "get_backend", "set_backend", "target_loss",
]
