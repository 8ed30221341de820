"""Fine-tuning baselines that need no source data (L2-SP, DELTA, BSS), behind one interface.

The interface mirrors the core's regularizers (:func:`adarand.build_regularizer`): a baseline
is built by name with checked keyword options, ``build_baseline(name, model, **options)``
(:func:`available_baselines`, :func:`baseline_options`), and called after the model's forward
pass as ``loss = baseline(features, labels, logits=None, classifier_weight=None)``, which
returns the term added to the loss. Two additions, because a baseline looks inside the model:

- ``with baseline.watch(images): features, logits = model.forward_features(images)``: the
  forward pass whose intermediate outputs the baseline reads (DELTA). Forward hooks exist only
  inside this block; the outputs are handed to the next call of the baseline and dropped there.
- ``baseline.needs_data`` / ``baseline.init_from_data(fit_batches, probe_batches)``: one-off
  initialisation from training data before training (DELTA's channel attention), like the
  regularizers' ``needs_stats`` / ``init_from_stats``.

Methods, one module each: L2-SP (:mod:`.l2sp`), DELTA (:mod:`.delta`; its channel attention
:mod:`.delta_attention`, its layers :mod:`.layers`), BSS (:mod:`.bss`); the interface :mod:`.base`.
"""
from typing import Any

from torch import nn

from adarand.registry import Registry

from .base import Baseline, head_l2
from .bss import BSS, _bss
from .delta import DELTA, DELTA_SCALES
from .delta_attention import (DELTA_BN_STATS, attention_weights, channel_loss_increase, fit_linear_head,
                              starting_loss_increase, target_bn_statistics)
from .l2sp import L2SP
from .layers import delta_layers

__all__ = ["Baseline", "L2SP", "DELTA", "BSS", "DELTA_SCALES", "DELTA_BN_STATS", "head_l2", "delta_layers",
           "fit_linear_head", "channel_loss_increase", "target_bn_statistics", "starting_loss_increase",
           "attention_weights", "available_baselines", "baseline_options", "build_baseline"]

_REGISTRY = Registry("baseline", {"l2sp": L2SP, "delta": DELTA, "bss": _bss}, leading=("model",))


def available_baselines() -> list[str]:
    """Names accepted by :func:`build_baseline`."""
    return _REGISTRY.names()


def baseline_options(name: str) -> dict[str, Any]:
    """The keyword options ``name`` accepts (beyond the model), with defaults."""
    return _REGISTRY.options(name)


def build_baseline(name: str, model: nn.Module, **options: Any) -> Baseline:
    """The baseline ``name`` for ``model`` (an ``ImageClassifier``: ``backbone``, ``head``).

    Options (see :func:`baseline_options`): ``alpha``, ``beta`` (L2-SP, DELTA), ``layers``,
    ``attention``, ``scale``, ``bn_stats`` (DELTA), ``eta``, ``k`` (BSS).
    """
    return _REGISTRY.build(name, model, **options)
