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
"""
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import ops
from .ce_gradients import ce_feature_grad_norm
from .distributed import all_reduce_sum_
from .ops.common import accumulation_dtype, count_bad_labels
from .prior import AdaptivePrior, ClassConditionalPrior
from .registry import Registry
from .stats import ClassStats
from .validation import check_features_labels, check_hyperparameter, check_logits_head, should_check_values


class Regularizer(nn.Module):
    """Base class: plain fine-tuning (``none``), zero loss, nothing to update.

    Args:
        num_classes: C, classes of the labels (and of the prior).
        feat_dim: D, dimension of the regularized features.
        lam: lambda, weight of the term (Eq. 1); finite and >= 0.
        check_values: check label ranges and finiteness on the host (a sync); ``None`` = on for
            CPU tensors, off for CUDA ones (then bad labels are masked and counted on the device).

    Shape (``loss = reg(features, labels, logits=None, classifier_weight=None)``):
        - features: (B, D), float (fp32, bf16 or fp16), differentiable
        - labels: (B,) int64 (or int32); rows labelled ``IGNORE_INDEX`` contribute nothing
        - logits: (B, K) and classifier_weight: (K, D), K >= C, the linear head's (PtR only)
        - Output: scalar, float32 (float64 for float64 features), differentiable w.r.t. ``features``

    Raises:
        ValueError: C or D < 1, a negative or non-finite ``lam``; at call time wrong shapes (and, with
            value checks, labels outside [0, C) other than ``IGNORE_INDEX`` or non-finite features).
        TypeError: a non-numeric ``lam``; labels neither int64 nor int32.
    """

    needs_stats = False

    def __init__(self, num_classes: int, feat_dim: int, lam: float = 1.0, check_values: bool | None = None):
        super().__init__()
        if int(num_classes) < 1 or int(feat_dim) < 1:
            raise ValueError(f"num_classes and feat_dim must be positive; got {num_classes}, {feat_dim}")
        lam = check_hyperparameter("lam", lam)
        self.num_classes, self.feat_dim, self.lam, self.check_values = num_classes, feat_dim, lam, check_values
        # the torch.Generator the noise is drawn from (None: torch's global RNG); the trainers and attach() give
        # one seeded from the run, so the method's draws never shift the data pipeline's random streams
        self.noise_generator = None
        # label values outside [0, C) other than IGNORE_INDEX, masked since the last check (not checkpointed:
        # a run that saw one stops at its next read-back)
        self.register_buffer("bad_labels", torch.zeros((), dtype=torch.int64), persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, lam={self.lam}"

    def check_inputs(self, features: torch.Tensor, labels: torch.Tensor, count: bool = True) -> None:
        """Shape/dtype checks (always), value checks (``check_values``) or, without them, count bad labels.

        Args:
            features: (B, D). labels: (B,) int64 or int32.
            count: count the bad labels (the forward does; :meth:`step` gets the same labels and does not,
                so a bad label is counted once a training step).

        Raises:
            ValueError / TypeError: as in the forward.
        """
        check_features_labels(features, labels, self.num_classes, self.feat_dim, self.check_values)
        counter = self.bad_label_counter(labels)
        if count and counter is not None:
            counter += count_bad_labels(labels, self.num_classes).to(counter.device)

    def bad_label_counter(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The counter bad labels go to: ``bad_labels`` when value checks are off (bad labels are then masked
        and counted on the device), else None (they raise instead).

        Args:
            labels: (B,), the batch's labels (their device decides the default of ``check_values``).

        Returns:
            the 0-dim int64 ``bad_labels`` buffer, or None.
        """
        return None if should_check_values(labels, self.check_values) else self.bad_labels

    def noise_source(self) -> torch.Generator | None:
        """The generator of this call's noise: ``noise_generator``, or None (torch's global RNG) when none is set
        or inside ``torch.compile`` (dynamo traces no ``torch.Generator``)."""
        if self.noise_generator is None or torch.compiler.is_compiling():
            return None
        return self.noise_generator

    def device_counters(self) -> dict[str, torch.Tensor]:
        """The error and skip counters, as device tensors (nothing read back)."""
        return {"bad_labels": self.bad_labels}

    def check_device_errors(self) -> dict[str, int]:
        """Read the counters back (a host sync: call on the log period); raise on bad labels, else return them.

        Under torch.distributed the bad-label count is summed over ranks first (every rank must
        call this at the same step, as the trainers do on their log period), so all raise together.
        The count is never reset (nor checkpointed): once it is nonzero, every later call raises.

        Returns:
            ``{name: int}`` for logging: ``bad_labels`` (0) and e.g. AdaRand's ``skipped_batches``.

        Raises:
            ValueError: labels outside [0, C) that are not ``IGNORE_INDEX`` were masked (on any rank).
        """
        bad = self.bad_labels.clone()
        all_reduce_sum_(bad)
        counters = {name: int(value) for name, value in {**self.device_counters(), "bad_labels": bad}.items()}
        if counters["bad_labels"]:
            raise ValueError(f"{counters['bad_labels']} label value(s) outside [0, {self.num_classes}) that are not "
                             f"IGNORE_INDEX ({ops.IGNORE_INDEX}) were given to the {type(self).__name__} regularizer "
                             "with value checks off; they were masked (no loss, no update), but the labels are wrong")
        return counters

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``0`` (plain fine-tuning): checks the inputs and returns a zero loss.

        Args:
            features: (B, D). labels: (B,). logits, classifier_weight: unused here (PtR's).

        Returns:
            scalar, float32, 0.
        """
        self.check_inputs(features, labels)
        return features.new_zeros((), dtype=torch.float32)

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Update after the model's optimizer step (nothing for this method but the input checks).

        Args:
            features: (B, D), detached. labels: (B,), as in the forward.

        Returns:
            None.
        """
        self.check_inputs(features, labels, count=False)
        return None

    def on_epoch_end(self) -> None:
        """Close an epoch (nothing for this method)."""

    def init_from_stats(self, stats: ClassStats) -> None:
        """Initialise from pre-trained class statistics (nothing for this method).

        Args:
            stats: an :class:`adarand.ClassStats` of C classes and D features (methods with ``needs_stats``).

        Returns:
            None.
        """


class FeatureNormPenalty(Regularizer):
    """FNP: ``lambda * mean_{i,d} f_id^2``, i.e. regression onto the zero target.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.

    Shape: as in :class:`Regularizer` (labels select the active rows; logits unused).

    Returns:
        ``reg(features, labels)``: the scalar ``lambda * sum_{i active, d} f_id^2 / (n_active D)`` (0 when
        no row is active).
    """

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``lambda * mean_{i active, d} f_id^2``.

        Args:
            features: (B, D), differentiable. labels: (B,). logits, classifier_weight: unused.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        self.check_inputs(features, labels, count=False)  # the loss counts the bad labels
        return self.lam * ops.target_loss(features, labels, num_classes=self.num_classes,
                                          bad_labels=self.bad_label_counter(labels))


class RandomTargetRegression(Regularizer):
    """RandReg: ``lambda * mean_{i,d} (f_id - r_id)^2`` with ``r_i`` drawn from a fixed prior.

    Args:
        num_classes, feat_dim, lam, check_values: as in :class:`Regularizer`.
        prior_init: ``uniform`` (U(0,1)), ``normal`` (N(0,1)), ``pretrained`` (one N(mean, std)
            from the pre-trained features of all classes) or ``class-conditional`` (per-class
            N(mu_c, sigma_c), Eq. 9-10); the last two need :meth:`init_from_stats` (``needs_stats``).
        alpha: EMA factor of the prior's running class means (used by AdaRand), in [0, 1].
        prior: the prior to regress onto, C x D and uninitialised (AdaRand passes its :class:`AdaptivePrior`);
            None builds a fixed :class:`ClassConditionalPrior` (``alpha`` is then its EMA factor).

    Shape: as in :class:`Regularizer` (``logits`` and ``classifier_weight`` unused).

    Returns:
        ``reg(features, labels)``: the scalar ``lambda`` times the regression loss, r drawn anew per call.

    Raises:
        ValueError: an unknown ``prior_init``, alpha outside [0, 1], or those of :class:`Regularizer`.
        RuntimeError: at call time, a ``pretrained`` / ``class-conditional`` prior not initialised yet.
    """

    PRIOR_INITS = ("uniform", "normal", "pretrained", "class-conditional")

    def __init__(self, num_classes: int, feat_dim: int, prior_init: str = "class-conditional", lam: float = 1.0,
                 alpha: float = 0.5, check_values: bool | None = None, *, prior: ClassConditionalPrior | None = None):
        super().__init__(num_classes, feat_dim, lam, check_values)
        if prior_init not in self.PRIOR_INITS:
            raise ValueError(f"unknown prior_init {prior_init!r}; choose one of {self.PRIOR_INITS}")
        self.prior_init = prior_init
        if prior is None:
            noise = "uniform" if prior_init == "uniform" else "normal"
            prior = ClassConditionalPrior(num_classes, feat_dim, alpha=alpha, noise=noise, check_values=check_values)
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

    def forward(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``lambda * mean_{i active, d} (f_id - r_id)^2``, r drawn from the prior.

        Args:
            features: (B, D), differentiable. labels: (B,). logits, classifier_weight: unused.

        Returns:
            scalar (float32, float64 for float64 features).
        """
        self.check_inputs(features, labels, count=False)  # the loss counts the bad labels
        return self.lam * self.prior.regression_loss(features, labels, generator=self.noise_source(),
                                                     bad_labels=self.bad_label_counter(labels), checked=True)


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
        super().__init__(num_classes, feat_dim, "class-conditional", lam, alpha, check_values, prior=prior)

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
    "none": Regularizer,
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
