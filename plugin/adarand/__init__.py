"""AdaRand: adaptive random feature regularization for fine-tuning (CVPR 2024).

The prior, the regularizers and the kernels need only torch. The trainers live in
``adarand.classification`` and ``adarand.detection`` (extra dependencies).
"""
from .diagnostics import (
    ce_feature_grad_norm, conditional_entropy, feature_diagnostics, feature_norm, gaussian_entropy,
    mutual_information,
)
from .ops import IGNORE_INDEX, get_backend, set_backend
from .prior import ClassConditionalPrior, prior_alignment_loss
from .prior_optim import PriorAdam
from .regularizers import (
    AdaRand, FeatureNormPenalty, PtR, RandomTargetRegression, Regularizer, available_regularizers,
    build_regularizer, regularizer_options,
)
from .stats import ClassStats, ClassStatsAccumulator, compute_class_stats

__version__ = "0.1.0"

__all__ = [
    "AdaRand", "ClassConditionalPrior", "IGNORE_INDEX", "ClassStats", "ClassStatsAccumulator", "FeatureNormPenalty",
    "PriorAdam", "PtR", "RandomTargetRegression", "Regularizer", "available_regularizers",
    "build_regularizer", "ce_feature_grad_norm", "compute_class_stats", "conditional_entropy",
    "feature_diagnostics", "feature_norm", "gaussian_entropy", "get_backend", "mutual_information",
    "prior_alignment_loss", "regularizer_options", "set_backend",
]
