"""Every regularizer of the two source papers behind one interface.

``loss = reg(features, labels, logits=None, classifier_weight=None)`` returns lambda
times the regularization term, differentiable w.r.t. ``features``; after the model's
optimizer step, ``reg.step(features.detach(), labels)`` updates whatever the method
adapts (AdaRand's running means and prior). ``reg.on_epoch_end()`` closes an epoch
(PtR's switch-on threshold). Methods that start from pre-trained statistics have
``needs_stats`` set and are initialised with ``reg.init_from_stats(stats)``.

Rows labelled :data:`adarand.IGNORE_INDEX` stay in place and contribute nothing (no
loss, no gradient, no running-mean update); every regression term is a mean over the
other rows (zero when there is none), computed on the device without a host sync.

Device-side safety (value checks off, the CUDA default): a label outside [0, C) that is
not IGNORE_INDEX is masked like an ignored row and counted in the ``bad_labels`` buffer;
:meth:`Regularizer.check_device_errors`, which the trainers call on their log period,
reads the counters back and raises ``ValueError`` naming the count. AdaRand skips the
running-mean and prior update of a batch whose class sums are not finite, on the
device, and counts it in ``skipped_batches`` (logged).

One module per method family: ``base.py`` (the interface; ``none``), ``fnp.py``, ``randreg.py``,
``adarand.py``, ``ptr.py``; here, the registry that builds them by name.
"""
from typing import Any

from ..registry import Registry
from .adarand import AdaRand
from .base import NoRegularizer, Regularizer, TargetRegression
from .fnp import FeatureNormPenalty
from .ptr import PtR
from .randreg import RandomTargetRegression

__all__ = [
    "AdaRand", "FeatureNormPenalty", "NoRegularizer", "PtR", "RandomTargetRegression", "Regularizer",
    "TargetRegression", "available_regularizers", "build_regularizer", "regularizer_options",
]


def _randreg(prior_init):
    def build(num_classes, feat_dim, lam=1.0, check_values=None):
        return RandomTargetRegression(num_classes, feat_dim, prior_init, lam=lam, check_values=check_values)

    return build


def _adarand(use_mean, use_dist):
    def build(num_classes, feat_dim, lam=1.0, alpha=0.5, prior_lr=1e-2, total_steps=None, check_values=None,
              prior_schedule="cosine_7_16"):
        return AdaRand(num_classes, feat_dim, lam, alpha, prior_lr, total_steps, use_mean, use_dist, check_values,
                       prior_schedule)

    return build


_REGISTRY = Registry("regularizer", {
    "none": NoRegularizer,
    "fnp": FeatureNormPenalty,
    "randreg-uniform": _randreg("uniform"),
    "randreg-normal": _randreg("normal"),
    "randreg-pretrained": _randreg("pretrained"),
    "randreg-cp": _randreg("class-conditional"),
    "adarand": _adarand(True, True),
    "adarand-no-mean": _adarand(False, True),
    "adarand-no-dist": _adarand(True, False),
    "ptr": PtR,
}, leading=("num_classes", "feat_dim"))


def available_regularizers() -> list[str]:
    """Names accepted by :func:`build_regularizer`.

    Returns:
        ``["none", "fnp", "randreg-uniform", "randreg-normal", "randreg-pretrained", "randreg-cp",
        "adarand", "adarand-no-mean", "adarand-no-dist", "ptr"]``.
    """
    return _REGISTRY.names()


def regularizer_options(name: str) -> dict[str, Any]:
    """The keyword options ``name`` accepts (beyond num_classes and feat_dim), with defaults.

    Args:
        name: one of :func:`available_regularizers`.

    Returns:
        ``{option: default}``, e.g. ``{"lam": 1.0}`` for ``fnp``.

    Raises:
        ValueError: an unknown name.
    """
    return _REGISTRY.options(name)


def build_regularizer(name: str, num_classes: int, feat_dim: int, **options: Any) -> "Regularizer":
    """Build the regularizer ``name`` for C classes and D-dimensional features.

    Options (each method takes a subset; see :func:`regularizer_options`): ``lam``
    (lambda), ``alpha`` (EMA), ``prior_lr``, ``total_steps`` (schedule length of
    the prior optimizer), ``prior_schedule`` (``cosine_7_16``, the official code's, or
    ``half_cosine`` / ``constant``; see :class:`PriorAdam`), ``ratio`` (PtR's R), ``target_scale`` (PtR's m),
    ``threshold`` (PtR's T), ``loss`` (PtR: ``smooth_l1``/``l2``), ``check_values``.

    Args:
        name: one of :func:`available_regularizers`.
        num_classes: C. feat_dim: D.
        **options: keyword options of that method.

    Returns:
        a :class:`Regularizer`; call it as ``reg(features, labels, logits=, classifier_weight=)``
        and, after the model's optimizer step, ``reg.step(features.detach(), labels)``.

    Raises:
        ValueError: an unknown name, an option the method does not take, a bad value.

    Example::

        reg = adarand.build_regularizer("adarand", num_classes=196, feat_dim=2048, total_steps=10000)
        reg.init_from_stats(adarand.compute_class_stats(model.features, loader, 196))
    """
    return _REGISTRY.build(name, num_classes, feat_dim, **options)
