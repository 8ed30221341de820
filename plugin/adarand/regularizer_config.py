"""One path from a trainer's config to a regularizer.

Both trainers hold the regularizer's keys under ``MODEL.ADARAND`` (a yacs/fvcore ``CfgNode``,
or a plain dict in Detectron2 LazyConfigs) with the names and defaults of
:data:`REGULARIZER_KEYS`; :func:`build_regularizer_from_config` checks them, maps them to the
options of :func:`adarand.build_regularizer` and keeps those the chosen method takes.
"""
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .schedules import SCHEDULES as PRIOR_SCHEDULES
from .regularizers import Regularizer, build_regularizer, regularizer_options

# Shared keys and their defaults: lambda and alpha as the paper fixes them (Sec. 6.1, App. A), the prior's
# optimiser (PRIOR_LR, PRIOR_LR_SCHEDULE) the official code's, PtR's Zhong & Maki's; docs/fidelity.md.
# A trainer may change a default.
REGULARIZER_KEYS = {
    # Any of adarand.available_regularizers(): "none" (plain fine-tuning), "fnp", "randreg-*",
    # "adarand", "adarand-no-mean", "adarand-no-dist", "ptr".
    "METHOD": "adarand",
    # lambda: weight of the feature-to-reference regression (Eq. 1 / Eq. 3).
    "LAMBDA": 1.0,
    # alpha: EMA factor of the running class means m_c (Eq. 14-15).
    "ALPHA": 0.5,
    # Learning rate of the prior's own Adam optimizer (Eq. 11-13), in (0, 1]: Adam moves every
    # coordinate of mu by up to about PRIOR_LR a step (larger values overflow float32 or blow mu up).
    "PRIOR_LR": 1e-2,
    # Per-iteration schedule of PRIOR_LR over the run: cosine_7_16 (the official code's
    # max(0, cos(pi 7/16 t/T))) | half_cosine ((1 + cos(pi t/T)) / 2) | constant.
    "PRIOR_LR_SCHEDULE": "cosine_7_16",
    # PtR only: R in w = G_ce / (G_ptr R); m in t ~ U[0, 2m); T, the epoch-mean CE below which
    # the term switches on; the regression loss (smooth_l1 | l2).
    "PTR_RATIO": 3.0,
    "PTR_TARGET_SCALE": 1.0,
    "PTR_THRESHOLD": 1.0,
    "PTR_LOSS": "smooth_l1",
}

# Config key -> keyword option of build_regularizer.
_OPTION_OF_KEY = {"LAMBDA": "lam", "ALPHA": "alpha", "PRIOR_LR": "prior_lr", "PRIOR_LR_SCHEDULE": "prior_schedule",
                  "PTR_RATIO": "ratio", "PTR_TARGET_SCALE": "target_scale", "PTR_THRESHOLD": "threshold",
                  "PTR_LOSS": "loss"}

_NUMBER_CHECKS = (
    ("LAMBDA", lambda v: v >= 0, "finite and >= 0"),
    ("ALPHA", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("PRIOR_LR", lambda v: 0 < v <= 1, "in (0, 1] (Adam moves each coordinate of the prior by about PRIOR_LR a step)"),
)


def select_options(accepted: Iterable[str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` whose name is in ``accepted``: the one place options are kept by name.

    Args:
        accepted: names a builder takes (e.g. :func:`adarand.regularizer_options`).
        values: candidate ``{name: value}`` from a config.
    """
    return {name: value for name, value in values.items() if name in accepted}


def check_regularizer_keys(node: Mapping[str, Any], prefix: str = "MODEL.ADARAND") -> None:
    """Refuse values of the shared keys that cannot train.

    Args:
        node: mapping holding the :data:`REGULARIZER_KEYS` (CfgNode or dict).
        prefix: where ``node`` sits in the config, used in the error message.

    Raises:
        ValueError: naming the key, e.g. ``config key MODEL.ADARAND.LAMBDA = -1.0; expected finite and >= 0``.
    """
    for key, ok, expected in _NUMBER_CHECKS:
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"config key {prefix}.{key} = {value!r}; expected {expected}")
    if node["PRIOR_LR_SCHEDULE"] not in PRIOR_SCHEDULES:
        raise ValueError(f"config key {prefix}.PRIOR_LR_SCHEDULE = {node['PRIOR_LR_SCHEDULE']!r}; "
                         f"expected one of {PRIOR_SCHEDULES}")


def regularizer_options_from_config(node: Mapping[str, Any], total_steps: int | None,
                                    prefix: str = "MODEL.ADARAND") -> dict[str, Any]:
    """Checked keyword options of :func:`adarand.build_regularizer` for ``node["METHOD"]``.

    Args:
        node: mapping holding the :data:`REGULARIZER_KEYS`.
        total_steps: training iterations, the length of the prior's learning-rate schedule.
        prefix: where ``node`` sits in the config (error messages).

    Returns:
        ``{option: value}`` with only the options the method takes.
    """
    check_regularizer_keys(node, prefix)
    values = {option: node[key] for key, option in _OPTION_OF_KEY.items()}
    values["total_steps"] = total_steps
    return select_options(regularizer_options(node["METHOD"]), values)


def build_regularizer_from_config(node: Mapping[str, Any], num_classes: int, feat_dim: int, total_steps: int | None,
                                  prefix: str = "MODEL.ADARAND") -> Regularizer:
    """``build_regularizer(node["METHOD"], num_classes, feat_dim, **options from node)``.

    Args:
        node: mapping holding the :data:`REGULARIZER_KEYS`.
        num_classes: C, classes of the prior.
        feat_dim: D, dimension of the regularized features.
        total_steps: training iterations (schedule of the prior's learning rate).
        prefix: where ``node`` sits in the config (error messages).
    """
    return build_regularizer(node["METHOD"], num_classes, feat_dim,
                             **regularizer_options_from_config(node, total_steps, prefix))
