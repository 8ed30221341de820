"""Feature diagnostics of AdaRand Sec. 4.2 / Fig. 2.

The paper's (computed "on training samples"; the official code logs them for every training
batch, ``updater/adarand.py``): :func:`pairwise_entropy` (Eq. 4), :func:`mean_feature_norm`
and :func:`ce_weight_grad_norm`; :class:`TrainingDiagnostics` averages them over an epoch's
batches without keeping any feature. The Gaussian fits (:func:`gaussian_entropy`,
:func:`mutual_information`) and the per-sample norms are this project's own extra measures.
Functions return tensors and never call ``.item()``, so a training loop can
accumulate them on the device and read them back once per epoch.
"""
import math

import torch

from .ce_gradients import ce_feature_grad_norm, ce_weight_grad_norm
from .distributed import all_reduce_sum_
from .ops.common import accumulation_dtype


def feature_norm(features: torch.Tensor) -> torch.Tensor:
    """``mean_i ||f_i||_2`` (ours; the paper's is :func:`mean_feature_norm`).

    Args:
        features: (N, D).

    Returns:
        scalar, float32.
    """
    return features.float().norm(dim=1).mean()


def mean_feature_norm(features: torch.Tensor) -> torch.Tensor:
    """``||mean_i f_i||_2``: the feature norm the official code logs per batch.

    Args:
        features: (N, D).

    Returns:
        scalar (float32, float64 for float64 features).
    """
    return features.to(accumulation_dtype(features.dtype)).mean(dim=0).norm()


def pairwise_entropy(features: torch.Tensor, min_distance: float = 1e-6) -> torch.Tensor:
    """Eq. 4, the paper's entropy estimate: ``D / (N (N-1)) sum_{i != j} log ||f_i - f_j||_2``.

    Distances below ``min_distance`` count as ``min_distance``, so identical rows give a
    finite value (the official code adds 1e-6 inside the norm for the same reason).

    Args:
        features: (N, D), N >= 2 (detached here). min_distance: the floor of the distances.

    Returns:
        scalar.

    Raises:
        ValueError: N < 2.
    """
    z = features.detach().to(accumulation_dtype(features.dtype))
    n, d = z.shape
    if n < 2:
        raise ValueError(f"the pairwise entropy needs at least 2 features, got {n}")
    dist = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist").clamp_min(min_distance)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=z.device)
    return d * dist.log().masked_fill(~off_diagonal, 0.0).sum() / (n * (n - 1))


class TrainingDiagnostics:
    """Epoch means, over training batches, of the paper's three per-batch diagnostics (Sec. 4.2, Fig. 2).

    ``update`` adds one batch's values to a device tensor (no host sync); ``means`` sums
    over ranks and returns ``{"pairwise_entropy", "mean_feature_norm", "ce_weight_grad_norm"}``
    as floats. Batches of a single sample have no pairwise entropy and are not counted.

    Args:
        device: where the sums live (the training device).

    Shape (``update(features, logits, labels)``):
        - features: (B, D); logits: (B, K); labels: (B,) int64 in [0, K)

    Returns:
        ``means()``: ``{name: float}``.
    """

    NAMES = ("pairwise_entropy", "mean_feature_norm", "ce_weight_grad_norm")

    def __init__(self, device: torch.device | str):
        self.sums = torch.zeros(len(self.NAMES), dtype=torch.float64, device=device)
        self.batches = 0

    @torch.no_grad()
    def update(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add one batch's three values on the device (nothing read back); a 1-sample batch is skipped.

        Args:
            features: (B, D). logits: (B, K). labels: (B,) int64 in [0, K).

        Returns:
            None.
        """
        if features.shape[0] < 2:
            return
        values = (pairwise_entropy(features), mean_feature_norm(features),
                  ce_weight_grad_norm(logits, labels, features))
        self.sums += torch.stack([v.to(self.sums.dtype) for v in values])
        self.batches += 1

    def means(self) -> dict:
        """The epoch means over every rank's batches (NaN without a batch); reads back once.

        Under torch.distributed every rank must call it (an all-reduce). The sums are not reset.

        Returns:
            ``{"pairwise_entropy", "mean_feature_norm", "ce_weight_grad_norm"}`` as floats.
        """
        totals = torch.cat([self.sums, self.sums.new_tensor([self.batches])])
        all_reduce_sum_(totals)
        values = totals.tolist()
        count = values[-1]
        return {name: (v / count if count else float("nan")) for name, v in zip(self.NAMES, values)}


def _covariance(features: torch.Tensor) -> torch.Tensor:
    centered = features - features.mean(dim=0, keepdim=True)
    return centered.T @ centered / max(features.shape[0] - 1, 1)


def gaussian_entropy(features: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Differential entropy (nats) of a Gaussian fitted to N x D features.

    ``H(Z) = D/2 log(2 pi e) + 1/2 log det(Sigma)``, Sigma the sample covariance. When
    N <= D, Sigma is singular: ``ridge * tr(Sigma) / D`` is added to its diagonal
    (the same relative ridge for every call, so values stay comparable across epochs).

    Args:
        features: (N, D). ridge: relative ridge used when N <= D.

    Returns:
        scalar, float64.
    """
    z = features.double()
    n, d = z.shape
    cov = _covariance(z)
    if n <= d:
        cov = cov + ridge * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(d, dtype=z.dtype, device=z.device)
    _, logdet = torch.linalg.slogdet(cov)
    return 0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * logdet


def conditional_entropy(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        ridge: float = 1e-3) -> torch.Tensor:
    """``H(Z|Y) = sum_c p(c) H(Z | Y=c)`` over the classes with at least two samples.

    Args:
        features: (N, D). labels: (N,) int64 in [0, C). num_classes: C. ridge: as in :func:`gaussian_entropy`.

    Returns:
        scalar, float64 (nats).

    Raises:
        ValueError: no class has two samples.
    """
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    used = [c for c in range(num_classes) if counts[c] >= 2]
    if not used:
        raise ValueError("conditional entropy needs a class with at least two samples")
    total = sum(counts[c] for c in used)
    return sum(counts[c] / total * gaussian_entropy(features[labels == c], ridge) for c in used)


def mutual_information(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                       ridge: float = 1e-3) -> torch.Tensor:
    """``I(Z; Y) = H(Z) - H(Z|Y)`` under the Gaussian fits.

    Args:
        features, labels, num_classes, ridge: as in :func:`conditional_entropy` (same Returns, Raises).
    """
    return gaussian_entropy(features, ridge) - conditional_entropy(features, labels, num_classes, ridge)


def feature_diagnostics(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                        logits: torch.Tensor | None = None, classifier_weight: torch.Tensor | None = None) -> dict:
    """This project's extra measures on a set of features, as plain floats (reads back: call once
    per evaluation, not per step): mean per-sample norm, Gaussian entropy and mutual information,
    mean per-sample CE gradient norm w.r.t. the features. None of them is the paper's estimator.
    The Gaussian fits are left out when the features are too few (fewer than 2; no class with 2).

    Args:
        features: (N, D). labels: (N,) int64 in [0, C). num_classes: C.
        logits: (N, C) and classifier_weight: (C, D), optional (the gradient norm needs both).

    Returns:
        ``{"sample_norm", "gaussian_entropy", "gaussian_mi", "ce_feature_grad_norm"}`` (those that apply).
    """
    out = {"sample_norm": feature_norm(features).item()}
    if features.shape[0] >= 2:
        out["gaussian_entropy"] = gaussian_entropy(features).item()
    if int(torch.bincount(labels, minlength=num_classes).max()) >= 2:
        out["gaussian_mi"] = mutual_information(features, labels, num_classes).item()
    if logits is not None and classifier_weight is not None:
        out["ce_feature_grad_norm"] = ce_feature_grad_norm(logits, labels, classifier_weight).mean().item()
    return out
