"""PtR, pseudo-task regularization (Zhong & Maki, CVPR 2020): regression onto U[0, 2m) targets, weighed by the
ratio of the CE's and its own feature-gradient norms, switched on once an epoch's mean CE is below a threshold."""
import torch
from torch.nn import functional as F

from .. import ops
from ..ce_gradients import ce_feature_grad_norm
from ..distributed import all_reduce_sum_
from ..ops.common import accumulation_dtype
from ..prior import ClassConditionalPrior
from ..checks import check_hyperparameter, check_logits_head
from .base import Regularizer


class PtR(Regularizer):
    """Pseudo-task regularization (Zhong & Maki, CVPR 2020).

    Regress features onto ``t ~ U[0, 2m)`` (smooth-L1 or L2, mean over coordinates) with
    weight ``w = G_ce / (G_ptr * R)``, where G_ce and G_ptr are the batch means of the
    per-sample gradient norms of the two losses w.r.t. the representation (G_ce
    analytic from the linear head). The term is off until the mean CE of an epoch
    falls below ``threshold`` (T), then stays on.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.
        ratio: R, > 0. target_scale: m, > 0. threshold: T, >= 0.
        loss: ``smooth_l1`` or ``l2``.

    Shape: as in :class:`Regularizer`; ``logits`` (B, K) and ``classifier_weight`` (K, D), K >= C, are required.

    Raises:
        ValueError: an unknown ``loss``, a bad ratio / target_scale / threshold, or those of
            :class:`Regularizer`; at call time missing or mis-shaped ``logits`` / ``classifier_weight``.
    """

    LOSSES = ("smooth_l1", "l2")

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 1.0, ratio: float = 3.0, target_scale: float = 1.0,
                 threshold: float = 1.0, loss: str = "smooth_l1", check_values: bool | None = None):
        super().__init__(num_classes, feat_dim, lam, check_values)
        if loss not in self.LOSSES:
            raise ValueError(f"unknown PtR loss {loss!r}; choose one of {self.LOSSES}")
        ratio = check_hyperparameter("ratio", ratio, positive=True)
        target_scale = check_hyperparameter("target_scale", target_scale, positive=True)
        threshold = check_hyperparameter("threshold", threshold)
        self.ratio, self.threshold, self.loss = ratio, threshold, loss
        self.prior = ClassConditionalPrior(num_classes, feat_dim, noise="uniform", check_values=check_values)
        self.prior.init_uniform(0.0, 2.0 * target_scale)
        self.register_buffer("enabled", torch.zeros((), dtype=torch.bool))
        self.register_buffer("epoch_ce_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("epoch_ce_count", torch.zeros((), dtype=torch.float64))

    def regression_terms(self, features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample regression losses (B,) and their gradients w.r.t. the features (B x D).

        Args:
            features: (B, D). targets: (B, D), e.g. :meth:`ClassConditionalPrior.sample`.

        Returns:
            ``(per_sample, grad)``: (B,) and (B, D) (detached), in the accumulation dtype.
        """
        acc = accumulation_dtype(features.dtype)
        diff = features.to(acc) - targets.to(acc)
        dim = features.shape[1]
        if self.loss == "smooth_l1":
            per_sample = F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=1.0).mean(dim=1)
            grad = diff.detach().clamp(-1.0, 1.0) / dim
        else:
            per_sample = diff.pow(2).mean(dim=1)
            grad = 2.0 * diff.detach() / dim
        return per_sample, grad

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``lambda * w * mean_{i active} loss(f_i, t_i)`` once enabled (0 before); adds the CE to the epoch sums.

        Args:
            features: (B, D), differentiable. labels: (B,).
            logits: (B, K), K >= C. classifier_weight: (K, D), the linear head's weight.

        Returns:
            scalar (0 until the threshold is met), differentiable w.r.t. ``features``.
        """
        self.check_inputs(features, labels)
        check_logits_head(logits, classifier_weight, features.shape[0], self.num_classes, self.feat_dim)
        active = ops.active_rows(labels, self.num_classes)
        count = active.sum()
        y = ops.safe_labels(labels, active).long()  # int32 labels are accepted; cross_entropy indexes with int64
        kept = torch.where(active[:, None], features, torch.zeros((), dtype=features.dtype, device=features.device))
        per_sample, grad = self.regression_terms(kept, self.prior.sample(labels, self.noise_source()))

        def active_mean(values):  # mean over the active rows; inactive values (even NaN) are dropped
            return torch.where(active, values, torch.zeros_like(values)).sum() / count.clamp(min=1)

        with torch.no_grad():
            g_ce = active_mean(ce_feature_grad_norm(logits, y, classifier_weight))
            g_ptr = active_mean(grad.norm(dim=1))
            weight = g_ce / (g_ptr * self.ratio).clamp(min=1e-12)
            ce = F.cross_entropy(logits.detach().double(), y, reduction="none")  # type: ignore[union-attr]
            self.epoch_ce_sum += torch.where(active, ce, torch.zeros_like(ce)).sum()
            self.epoch_ce_count += count
        loss = self.lam * weight * active_mean(per_sample)
        return torch.where(self.enabled, loss, torch.zeros_like(loss))

    @torch.no_grad()
    def on_epoch_end(self) -> None:
        """Switch on once an epoch's mean CE over all ranks is below T (no host read).

        The CE sum and count (never means) are all-reduced first, so every rank takes the
        same decision; ``enabled`` is a buffer, so a resumed run keeps it. Under
        torch.distributed every rank must call this (it is a collective).

        Returns:
            None.
        """
        all_reduce_sum_(self.epoch_ce_sum, self.epoch_ce_count)
        mean_ce = self.epoch_ce_sum / self.epoch_ce_count.clamp(min=1)
        self.enabled |= (self.epoch_ce_count > 0) & (mean_ce < self.threshold)
        self.epoch_ce_sum.zero_()
        self.epoch_ce_count.zero_()

