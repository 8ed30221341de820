"""AdaRand: class-conditional RandReg whose prior adapts itself during fine-tuning (Sec. 5.2, Algorithm 1)."""
import torch

from ..prior import AdaptivePrior
from ..checks import check_hyperparameter
from .randreg import RandomTargetRegression


class AdaRand(RandomTargetRegression):
    """AdaRand: class-conditional RandReg whose prior adapts itself during fine-tuning.

    The prior is an :class:`AdaptivePrior`: each :meth:`step` validates the inputs and calls its
    :meth:`AdaptivePrior.adapt` (running class means, Eq. 14-15, then one Adam step on
    ``L_mean + L_dist``, Eq. 11-13, w.r.t. mu; sigma stays fixed). ``use_mean=False`` /
    ``use_dist=False`` give the paper's ablations (Table 5).

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.
        alpha: EMA factor of the running class means (Eq. 14), in [0, 1].
        prior_lr: Adam learning rate of the prior update; > 0.
        total_steps: length of the prior's learning-rate schedule (the run's iterations);
            None keeps it constant.
        use_mean, use_dist: keep ``L_mean`` / ``L_dist`` (not both False).
        prior_schedule: ``cosine_7_16`` (the official code's), ``half_cosine`` or ``constant``.

    Shape: as in :class:`Regularizer` (``logits`` and ``classifier_weight`` unused); initialise with
    :meth:`init_from_stats` first.

    Raises:
        ValueError: both ``use_*`` False, ``prior_lr <= 0``, ``total_steps < 1``, an unknown schedule, or as above.
    """

    # where the prior's optimizer and skip counter were kept before the prior owned them
    _FORMER_KEYS = {"prior_optimizer.": "prior.optimizer.", "skipped_batches": "prior.skipped_batches"}

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 1.0, alpha: float = 0.5, prior_lr: float = 1e-2,
                 total_steps: int | None = None, use_mean: bool = True, use_dist: bool = True,
                 check_values: bool | None = None, prior_schedule: str = "cosine_7_16"):
        if not (use_mean or use_dist):
            raise ValueError("AdaRand needs at least one of use_mean / use_dist")
        prior_lr = check_hyperparameter("prior_lr", prior_lr, positive=True)
        prior = AdaptivePrior(num_classes, feat_dim, alpha=alpha, lr=prior_lr, total_steps=total_steps,
                              schedule=prior_schedule, use_mean=use_mean, use_dist=use_dist, check_values=check_values)
        super().__init__(num_classes, feat_dim, "class-conditional", lam, check_values, prior=prior)

    def device_counters(self) -> dict[str, torch.Tensor]:
        return {**super().device_counters(), "skipped_batches": self.prior.skipped_batches}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for former, current in self._FORMER_KEYS.items():
            for key in [key for key in state_dict if key.startswith(prefix + former)]:
                state_dict[prefix + current + key[len(prefix + former):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Validate the inputs once, then :meth:`AdaptivePrior.adapt`; returns the prior loss (detached).

        A batch whose features are not finite (non-ignored rows) moves nothing (running
        means, mu, Adam moments), decided on the device; it is counted in ``prior.skipped_batches``.

        Args:
            features: (B, D), detached. labels: (B,), as in the forward.

        Returns:
            scalar in mu's dtype (float32), the prior loss ``L_mean + L_dist`` before the update, detached.
        """
        self.check_inputs(features, labels, count=False)  # the forward counted this step's bad labels
        return self.prior.adapt(features, labels, checked=True)

