"""FNP, the feature-norm penalty: regression onto the zero target."""
import torch

from .. import ops
from .base import TargetRegression


class FeatureNormPenalty(TargetRegression):
    """FNP: ``lambda * mean_{i,d} f_id^2``, i.e. regression onto the zero target.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.

    Shape: as in :class:`Regularizer` (labels select the active rows; logits unused).

    Returns:
        ``reg(features, labels)``: the scalar ``lambda * sum_{i active, d} f_id^2 / (n_active D)`` (0 when
        no row is active).
    """

    def target_loss(self, features: torch.Tensor, labels: torch.Tensor,
                    bad_labels: torch.Tensor | None) -> torch.Tensor:
        """``mean_{i active, d} f_id^2``.

        Args:
            features: (B, D), differentiable. labels: (B,). bad_labels: as in :meth:`TargetRegression.target_loss`.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        return ops.target_loss(features, labels, num_classes=self.num_classes, bad_labels=bad_labels)
