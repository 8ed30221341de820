"""Feature diagnostics of AdaRand Sec. 4.2 / Fig. 2.

Functions return tensors and never call ``.item()``, so a training loop can
accumulate them on the device and read them back once per epoch.
"""
import math

import torch
from torch.nn import functional as F

from .ops.target_loss import accumulation_dtype


def feature_norm(features: torch.Tensor) -> torch.Tensor:
    """``mean_i ||f_i||_2``."""
    return features.float().norm(dim=1).mean()


def ce_feature_grad_norm(logits, labels, classifier_weight) -> torch.Tensor:
    """Per-sample ``||d CE(W f_i + b, y_i) / d f_i||_2 = ||W^T (softmax(z_i) - onehot(y_i))||_2`` (B,).

    Analytic for a linear head ``z = W f + b`` (``classifier_weight`` is K x D): no
    second backward pass.
    """
    acc = accumulation_dtype(logits.dtype)
    residual = F.softmax(logits.detach().to(acc), dim=1)
    residual[torch.arange(labels.shape[0], device=labels.device), labels] -= 1.0
    return (residual @ classifier_weight.detach().to(acc)).norm(dim=1)


def _covariance(features: torch.Tensor) -> torch.Tensor:
    centered = features - features.mean(dim=0, keepdim=True)
    return centered.T @ centered / max(features.shape[0] - 1, 1)


def gaussian_entropy(features: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Differential entropy (nats) of a Gaussian fitted to N x D features.

    ``H(Z) = D/2 log(2 pi e) + 1/2 log det(Sigma)``, Sigma the sample covariance. When
    N <= D, Sigma is singular: ``ridge * tr(Sigma) / D`` is added to its diagonal
    (the same relative ridge for every call, so values stay comparable across epochs).
    """
    z = features.double()
    n, d = z.shape
    cov = _covariance(z)
    if n <= d:
        cov = cov + ridge * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(d, dtype=z.dtype, device=z.device)
    _, logdet = torch.linalg.slogdet(cov)
    return 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * logdet


def conditional_entropy(features, labels, num_classes: int, ridge: float = 1e-3) -> torch.Tensor:
    """``H(Z|Y) = sum_c p(c) H(Z | Y=c)`` over the classes with at least two samples."""
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    used = [c for c in range(num_classes) if counts[c] >= 2]
    if not used:
        raise ValueError("conditional entropy needs a class with at least two samples")
    total = sum(counts[c] for c in used)
    return sum(counts[c] / total * gaussian_entropy(features[labels == c], ridge) for c in used)


def mutual_information(features, labels, num_classes: int, ridge: float = 1e-3) -> torch.Tensor:
    """``I(Z; Y) = H(Z) - H(Z|Y)`` under the Gaussian fits."""
    return gaussian_entropy(features, ridge) - conditional_entropy(features, labels, num_classes, ridge)


def feature_diagnostics(features, labels, num_classes: int, logits=None, classifier_weight=None) -> dict:
    """Everything Fig. 2 plots, as plain floats (reads back: call once per evaluation, not per step)."""
    out = {
        "feature_norm": feature_norm(features).item(),
        "feature_entropy": gaussian_entropy(features).item(),
        "mutual_information": mutual_information(features, labels, num_classes).item(),
    }
    if logits is not None and classifier_weight is not None:
        out["ce_grad_norm"] = ce_feature_grad_norm(logits, labels, classifier_weight).mean().item()
    return out
