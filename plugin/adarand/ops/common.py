"""Package-wide helpers of the ops: the ignored label, the noises, the normalisation's eps, active rows, bad labels
and the accumulation dtype.

Imported by the kernels' modules, the regularizers and the input checks alike, so that no
op module has to import another to reach them (a ``*_triton.py`` module imports only these,
``triton_common.py`` and Triton: never its host module).
"""
import torch

NOISES = ("normal", "uniform")
IGNORE_INDEX = -100  # label of rows kept in place that contribute nothing (torch's cross_entropy default)
NORM_EPS = 1e-12  # the prior's row normalisation, F.normalize's eps


def active_rows(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Bool (B,): ``0 <= y_i < C`` (``num_classes=None``: any ``y_i >= 0``).

    Args:
        labels: (B,) integer labels (``IGNORE_INDEX`` = -100 is inactive). num_classes: C or None.

    Returns:
        (B,) bool, on the labels' device.
    """
    active = labels >= 0
    return active if num_classes is None else active & (labels < num_classes)


def bad_label_mask(labels: torch.Tensor, num_classes: int | None) -> torch.Tensor:
    """Bool (B,): the labels that are neither in [0, C) nor ``IGNORE_INDEX`` (``num_classes=None``: neither >= 0).

    Args:
        labels: (B,) integer labels. num_classes: C or None.
    """
    return (labels != IGNORE_INDEX) & ~active_rows(labels, num_classes)


def count_bad_labels(labels: torch.Tensor | None, num_classes: int | None) -> torch.Tensor:
    """How many labels are neither in [0, C) nor ``IGNORE_INDEX``: a 0-dim int64 device tensor (0 for no labels).

    Args:
        labels: (B,) integer labels, or None. num_classes: C.
    """
    if labels is None:
        return torch.zeros((), dtype=torch.int64)
    return bad_label_mask(labels, num_classes).sum()


def safe_labels(labels: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Labels with the inactive rows sent to class 0, so gathers stay in bounds.

    Args:
        labels: (B,). active: (B,) bool, from :func:`active_rows`.

    Returns:
        (B,), the labels' dtype: ``labels`` where active, else 0.
    """
    return torch.where(active, labels, torch.zeros_like(labels))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs accumulate in fp32; fp32 and fp64 keep their precision."""
    return torch.promote_types(dtype, torch.float32)
