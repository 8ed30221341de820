"""RandReg: regression onto random targets drawn from a fixed prior (uniform, normal, pre-trained statistics)."""
import torch

from ..prior import ClassConditionalPrior
from ..stats import ClassStats
from .base import TargetRegression


class RandomTargetRegression(TargetRegression):
    """RandReg: ``lambda * mean_{i,d} (f_id - r_id)^2`` with ``r_i`` drawn from a fixed prior.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.
        prior_init: ``uniform`` (U(0,1)), ``normal`` (N(0,1)), ``pretrained`` (one N(mean, std)
            from the pre-trained features of all classes) or ``class-conditional`` (per-class
            N(mu_c, sigma_c), Eq. 9-10); the last two need :meth:`init_from_stats` (``needs_stats``).
        prior: the prior to regress onto, C x D and uninitialised (AdaRand passes its :class:`AdaptivePrior`);
            None builds a fixed :class:`ClassConditionalPrior`.

    Shape: as in :class:`Regularizer` (``logits`` and ``classifier_weight`` unused).

    Returns:
        ``reg(features, labels)``: the scalar ``lambda`` times the regression loss, r drawn anew per call.

    Raises:
        ValueError: an unknown ``prior_init``, or those of :class:`Regularizer`.
        RuntimeError: at call time, a ``pretrained`` / ``class-conditional`` prior not initialised yet.
    """

    PRIOR_INITS = ("uniform", "normal", "pretrained", "class-conditional")

    def __init__(self, num_classes: int, feat_dim: int, prior_init: str = "class-conditional", lam: float = 1.0,
                 check_values: bool | None = None, *, prior: ClassConditionalPrior | None = None):
        super().__init__(num_classes, feat_dim, lam, check_values)
        if prior_init not in self.PRIOR_INITS:
            raise ValueError(f"unknown prior_init {prior_init!r}; choose one of {self.PRIOR_INITS}")
        self.prior_init = prior_init
        if prior is None:
            noise = "uniform" if prior_init == "uniform" else "normal"
            prior = ClassConditionalPrior(num_classes, feat_dim, noise=noise, check_values=check_values)
        self.prior = prior
        if prior_init == "uniform":
            self.prior.init_uniform(0.0, 1.0)
        elif prior_init == "normal":
            self.prior.init_normal(0.0, 1.0)

    @property
    def needs_stats(self) -> bool:  # type: ignore[override]  # a class attribute of the base
        return self.prior_init in ("pretrained", "class-conditional")

    def init_from_stats(self, stats: ClassStats) -> None:
        """Eq. 9-10 from ``stats`` (``pretrained``: its global mean/std; ``class-conditional``: per class).

        The ``uniform`` and ``normal`` priors are fixed: nothing happens for them.

        Args:
            stats: an :class:`adarand.ClassStats`; mean/std (C, D), global_mean/global_std (D,).

        Raises:
            ValueError: a wrong shape or a non-finite / negative value (see
                :meth:`ClassConditionalPrior.init_from_stats`).
        """
        if self.prior_init == "pretrained":
            self.prior.init_from_stats(stats.global_mean, stats.global_std)
        elif self.prior_init == "class-conditional":
            self.prior.init_from_stats(stats.mean, stats.std)

    def target_loss(self, features: torch.Tensor, labels: torch.Tensor,
                    bad_labels: torch.Tensor | None) -> torch.Tensor:
        """``mean_{i active, d} (f_id - r_id)^2``, r drawn from the prior (from :meth:`noise_source`).

        Args:
            features: (B, D), differentiable. labels: (B,). bad_labels: as in :meth:`TargetRegression.target_loss`.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        return self.prior.regression_loss(features, labels, generator=self.noise_source(), bad_labels=bad_labels,
                                          checked=True)
