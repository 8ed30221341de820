"""Kernels of the prior: PyTorch reference path and fused Triton path, one dispatch point."""
from .backend import HAS_TRITON, get_backend, set_backend
from .class_ema import class_ema_, class_sums, ema_apply_
from .common import IGNORE_INDEX, NOISES, active_rows, safe_labels
from .target_loss import draw_noise, target_loss

__all__ = [
    "HAS_TRITON", "IGNORE_INDEX", "NOISES", "active_rows", "safe_labels", "class_ema_", "class_sums", "draw_noise", "ema_apply_",
    "get_backend", "set_backend", "target_loss",
]
