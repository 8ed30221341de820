"""The one dispatch point between the PyTorch path and the fused Triton kernels.

Precedence, read at call time: an explicit ``impl=`` argument, then
:func:`set_backend`, then the ``ADARAND_BACKEND`` environment variable, then ``auto``
(Triton for CUDA tensors when Triton is importable, PyTorch otherwise).
"""
import os

import torch

BACKENDS = ("auto", "torch", "triton")
_backend_override = None

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the installation
    HAS_TRITON = False


def set_backend(name: str | None) -> None:
    """Force ``"torch"`` or ``"triton"`` everywhere, or ``"auto"``; ``None`` clears the override.

    Args:
        name: ``"auto"`` (Triton for CUDA tensors when installed, else torch), ``"torch"``,
            ``"triton"`` (CUDA tensors, or CPU ones under ``TRITON_INTERPRET=1``) or None.

    Returns:
        None.

    Raises:
        ValueError: an unknown name.
    """
    global _backend_override
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    _backend_override = name


def get_backend() -> str:
    """The backend requested by set_backend / ADARAND_BACKEND (before ``auto`` is resolved).

    Returns:
        ``"auto"``, ``"torch"`` or ``"triton"``; read at call time.

    Raises:
        ValueError: ``ADARAND_BACKEND`` names none of them.
    """
    if _backend_override is not None:
        return _backend_override
    name = os.environ.get("ADARAND_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"ADARAND_BACKEND={name!r} is not one of {BACKENDS}")
    return name


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve(tensor: torch.Tensor, impl: str | None = None) -> str:
    """Return ``"torch"`` or ``"triton"`` for an op on ``tensor``."""
    name = impl if impl is not None else get_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown impl {name!r}; choose one of {BACKENDS}")
    if name == "auto":
        return "triton" if (HAS_TRITON and tensor.is_cuda) else "torch"
    if name == "triton":
        if not HAS_TRITON:
            raise RuntimeError("the 'triton' backend was requested but triton is not installed")
        if not tensor.is_cuda and not triton_interpreter_on():
            raise RuntimeError(
                "the 'triton' backend needs CUDA tensors, or TRITON_INTERPRET=1 to run the "
                "kernels on the CPU (slow; meant for tests)"
            )
    return name
