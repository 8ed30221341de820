"""AdaRand: adaptive random feature regularization for fine-tuning (CVPR 2024).

The prior, the regularizers and the kernels need only torch; :func:`attach` puts a regularizer on
an unchanged model's classifier head (a linear layer, or a 1x1 convolution: :mod:`adarand.dense`). ``adarand.integrations`` holds Lightning and Transformers
glue (their own extras). The trainers live in
``adarand.classification`` and ``adarand.detection`` (extra dependencies).
"""
from . import dense
from .attach import AttachedRegularizer, attach
from .regularizer_config import (
    REGULARIZER_KEYS, build_regularizer_from_config, check_regularizer_keys, regularizer_options_from_config,
    select_options,
)
from .ce_gradients import ce_feature_grad_norm, ce_weight_grad_norm
from .diagnostics import (
    TrainingDiagnostics, conditional_entropy, feature_diagnostics, feature_norm, gaussian_entropy, mean_feature_norm,
    mutual_information, pairwise_entropy,
)
from .ops import IGNORE_INDEX, get_backend, set_backend
from .prior import AdaptivePrior, ClassConditionalPrior, prior_alignment_loss
from .prior_optim import PriorAdam
from .regularizers import (
    AdaRand, FeatureNormPenalty, PtR, RandomTargetRegression, Regularizer, available_regularizers,
    build_regularizer, regularizer_options,
)
from .stats import ClassStats, ClassStatsAccumulator, compute_class_stats

__version__ = "0.2.0"

__all__ = [
    "AdaRand", "AdaptivePrior", "ClassConditionalPrior", "REGULARIZER_KEYS", "build_regularizer_from_config",
    "check_regularizer_keys", "regularizer_options_from_config", "select_options", "IGNORE_INDEX", "ClassStats", "ClassStatsAccumulator", "FeatureNormPenalty",
    "PriorAdam", "PtR", "RandomTargetRegression", "Regularizer", "TrainingDiagnostics", "available_regularizers",
    "build_regularizer", "ce_feature_grad_norm", "ce_weight_grad_norm", "compute_class_stats",
    "conditional_entropy", "feature_diagnostics", "feature_norm", "gaussian_entropy", "get_backend",
    "mean_feature_norm", "mutual_information", "pairwise_entropy", "prior_alignment_loss", "regularizer_options",
    "set_backend",
    "AttachedRegularizer", "attach",
]
