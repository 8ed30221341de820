"""Analytic gradients of the cross-entropy of a linear head ``z = W f + b``, without a backward pass.

For ``CE(z_i, y_i)`` the gradient w.r.t. the logits is the residual ``softmax(z_i) - onehot(y_i)``;
the gradients w.r.t. the head's weight and its input follow from it by the chain rule. PtR weighs
its term with the second (per sample); the paper's Fig. 2 plots the norm of the first (Eq. 5).
"""
import torch
from torch.nn import functional as F

from .ops.common import accumulation_dtype


def ce_logit_residual(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``softmax(z_i) - onehot(y_i)``, the gradient of ``CE(z_i, y_i)`` w.r.t. the logits ``z_i`` (B x K).

    Args:
        logits: (B, K). labels: (B,) int64 in [0, K).

    Returns:
        (B, K), detached, in the accumulation dtype (float32, float64 for float64 logits).
    """
    residual = F.softmax(logits.detach().to(accumulation_dtype(logits.dtype)), dim=1)
    residual[torch.arange(labels.shape[0], device=labels.device), labels] -= 1.0
    return residual


def ce_weight_grad_norm(logits: torch.Tensor, labels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``||d CE / d W||_F`` for a linear head ``z = W f + b`` and the batch-mean CE:
    ``||(softmax(Z) - onehot(Y))^T F||_F / B`` (what the official code logs as ``grad_norm``,
    the norm of the classifier weight's gradient, Eq. 5).

    Args:
        logits: (B, K). labels: (B,) int64 in [0, K). features: (B, D), the head's input.

    Returns:
        scalar (float32, float64 for float64 logits), detached.
    """
    residual = ce_logit_residual(logits, labels)
    return (residual.T @ features.detach().to(residual.dtype)).norm() / labels.shape[0]


def ce_feature_grad_norm(logits: torch.Tensor, labels: torch.Tensor, classifier_weight: torch.Tensor) -> torch.Tensor:
    """Per-sample ``||d CE(W f_i + b, y_i) / d f_i||_2 = ||W^T (softmax(z_i) - onehot(y_i))||_2`` (B,).

    Analytic for a linear head ``z = W f + b`` (``classifier_weight`` is K x D): no
    second backward pass.

    Args:
        logits: (B, K). labels: (B,) int64 in [0, K). classifier_weight: (K, D).

    Returns:
        (B,) norms (float32, float64 for float64 logits), detached.
    """
    residual = ce_logit_residual(logits, labels)
    return (residual @ classifier_weight.detach().to(residual.dtype)).norm(dim=1)
