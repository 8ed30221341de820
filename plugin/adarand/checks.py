"""Input checks that name the problem before any state is touched.

Shape checks are free and always run. Value checks (label range, NaN/Inf) read the
data back to the host, which on CUDA is a synchronization on every step: they run by
default on CPU tensors and on CUDA only when the caller asks (``check_values=True``).
"""
import math
from typing import Any

import torch

from .ops.common import IGNORE_INDEX, bad_label_mask

LABEL_DTYPES = (torch.int64, torch.int32)


def should_check_values(tensor: torch.Tensor, check_values: bool | None) -> bool:
    """``check_values``, or by default: on for CPU tensors only (a host read is free there; an accelerator's would
    sync, and a meta tensor has no values)."""
    return (tensor.device.type == "cpu") if check_values is None else bool(check_values)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s)")


def check_hyperparameter(name: str, value: Any, positive: bool = False) -> float:
    """``value`` as a float, refused unless finite and > 0 (``positive``) or >= 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'}; got {value!r}")
    return number


def check_features(features: torch.Tensor, feat_dim: int, check_values: bool | None = None) -> None:
    if features.dim() != 2 or features.shape[1] != feat_dim:
        raise ValueError(
            f"features must have shape (batch, {feat_dim}); got {tuple(features.shape)} "
            "(feature-dimension mismatch with the prior)"
        )
    if should_check_values(features, check_values):
        check_finite("features", features)


def check_labels(labels: torch.Tensor, batch_size: int, num_classes: int, check_values: bool | None = None) -> None:
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise ValueError(f"labels must have shape ({batch_size},); got {tuple(labels.shape)}")
    if labels.dtype not in LABEL_DTYPES:
        raise TypeError(
            f"labels must be an integer tensor of at least 32 bits (int64 or int32); got {labels.dtype} (uint8/bool tensors index as masks "
            "and cannot hold IGNORE_INDEX = -100: convert with labels.long())"
        )
    if batch_size and should_check_values(labels, check_values):
        bad = bad_label_mask(labels, num_classes)
        if bad.any():
            values = sorted(set(labels[bad].tolist()))
            raise ValueError(f"labels must lie in [0, {num_classes}) or be IGNORE_INDEX ({IGNORE_INDEX}); "
                             f"got {bad.sum().item()} label(s) with values {values[:5]}")


def check_features_labels(features: torch.Tensor, labels: torch.Tensor, num_classes: int, feat_dim: int,
                          check_values: bool | None = None) -> None:
    """Shapes, label dtype/range, and the finiteness of the rows not labelled IGNORE_INDEX."""
    check_features(features, feat_dim, False)
    check_labels(labels, features.shape[0], num_classes, check_values)
    if should_check_values(features, check_values):
        check_finite("features", features[labels != IGNORE_INDEX])


def check_logits_head(logits: torch.Tensor | None, classifier_weight: torch.Tensor | None, batch_size: int,
                      num_classes: int, feat_dim: int) -> None:
    """A linear head's logits (B x K) and weight (K x D), with K >= C so that every label indexes a logit."""
    if logits is None or classifier_weight is None:
        raise ValueError("ptr needs the logits and the classifier weight (K x D) of the linear head")
    if logits.dim() != 2 or logits.shape[0] != batch_size or logits.shape[1] < num_classes:
        raise ValueError(f"logits must have shape ({batch_size}, K) with K >= {num_classes}; got {tuple(logits.shape)}")
    if tuple(classifier_weight.shape) != (logits.shape[1], feat_dim):
        raise ValueError(f"classifier_weight must have shape ({logits.shape[1]}, {feat_dim}) to match the logits "
                         f"and features; got {tuple(classifier_weight.shape)}")
