"""The class-conditional prior of AdaRand (Yamaguchi et al., CVPR 2024, Sec. 5.1-5.2, Algorithm 1).

Class c has a diagonal Gaussian ``N(mu_c, diag(sigma_c^2))`` over the D-dimensional
penultimate features. One module serves every random-target method: a class-agnostic prior
(RandReg, PtR) is the same module with all rows equal. AdaRand's prior, :class:`AdaptivePrior`,
is that module plus what only AdaRand uses: the per-class running feature means ``m_c`` tracked
during fine-tuning, the alignment losses and the optimizer step on ``mu``, in one call
(:meth:`AdaptivePrior.adapt`).
"""
import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from . import ops
from .prior_optim import PriorAdam
from .checks import check_features_labels, check_finite, check_labels

class NonFinitePriorError(ValueError):
    """A loaded prior state whose ``mu``, ``sigma`` (or AdaptivePrior's ``running_mean``) holds NaN/Inf."""


@contextlib.contextmanager
def naming_checkpoint(path: str | None) -> Iterator[None]:
    """Put ``path`` (the file being loaded; None: nothing) in front of a :class:`NonFinitePriorError` of the block."""
    try:
        yield
    except NonFinitePriorError as err:
        if path is None:
            raise
        raise NonFinitePriorError(f"{path}: {err}") from None


def prior_alignment_loss(mu: torch.Tensor, running_mean: torch.Tensor, use_mean: bool = True,
                         use_dist: bool = True) -> torch.Tensor:
    """``L_mean + L_dist`` (Eq. 11-13).

    ``L_mean = mean_c (1 - cos(mu_c, m_c))^2`` pulls each prior mean towards the class's
    running feature mean; ``L_dist = mean_{c != c'} cos(mu_c, mu_c')^2`` pushes prior
    means of different classes apart. ``L_dist`` uses the C x C Gram matrix of the
    normalized means, or the D x D one when C > D (``||U U^T||_F = ||U^T U||_F``), so
    memory never grows like C^2 * D.

    Args:
        mu: prior means; differentiable.
        running_mean: running class feature means m_c.
        use_mean, use_dist: keep ``L_mean`` / ``L_dist`` (False: the paper's ablations, Table 5).

    Shape:
        - mu, running_mean: (C, D)
        - Output: scalar, differentiable w.r.t. ``mu`` (0 when no term applies)

    Returns:
        scalar in mu's dtype; ``L_dist`` is 0 when C = 1.
    """
    unit = nn.functional.normalize(mu, dim=1)
    loss = 0.0 * mu.sum()  # keeps the loss differentiable w.r.t. mu when no term applies (C = 1)
    if use_mean:
        cos = (unit * nn.functional.normalize(running_mean.to(mu.dtype), dim=1)).sum(dim=1)
        loss = loss + (1 - cos).pow(2).mean()
    num_classes, feat_dim = mu.shape
    if use_dist and num_classes > 1:
        gram = unit @ unit.T if num_classes <= feat_dim else unit.T @ unit
        self_cos_sq = unit.pow(2).sum(dim=1).pow(2)  # cos(mu_c, mu_c)^2: 1, or 0 for a zero row
        off_diagonal = gram.pow(2).sum() - self_cos_sq.sum()
        loss = loss + off_diagonal / (num_classes * (num_classes - 1))
    return loss


class ClassConditionalPrior(nn.Module):
    """Per-class diagonal Gaussians: the fixed prior of RandReg and PtR, and the base of :class:`AdaptivePrior`.

    ``mu`` is an ``nn.Parameter`` with ``requires_grad=False``: the network's loss never
    reaches it (samples are detached); only :meth:`AdaptivePrior.adapt` moves it. So an outer optimizer built from
    ``model.parameters()`` or a DDP wrapper never sees it as trainable.

    ``initialized`` (a host bool, never a device read) is the one record of whether the prior is ready: set by
    an init, or by a load of a state that holds the prior's tensors.

    Args:
        num_classes: C. feat_dim: D.
        noise: ``"normal"`` for Gaussian priors, ``"uniform"`` for U(low, high) priors.
        check_values: validate label ranges and finiteness (host sync); ``None`` = on CPU only.

    Shape:
        - mu, sigma: (C, D), float32
        - features: (B, D); labels: (B,) int64 (or int32), rows labelled ``IGNORE_INDEX`` take no part

    Raises:
        ValueError: C or D < 1, an unknown ``noise``.
        RuntimeError: :meth:`sample` or :meth:`regression_loss` before an init.
    """

    # the state's tensors: a load that holds them all initialises the prior; a non-finite one is refused
    TENSORS: tuple[str, ...] = ("mu", "sigma")
    # keys every prior's state held before the running means became AdaptivePrior's: dropped on load
    _FORMER_KEYS: tuple[str, ...] = ("running_mean",)

    def __init__(self, num_classes: int, feat_dim: int, noise: str = "normal", check_values: bool | None = None):
        super().__init__()
        if num_classes < 1 or feat_dim < 1:
            raise ValueError(f"num_classes and feat_dim must be positive; got {num_classes}, {feat_dim}")
        if noise not in ops.NOISES:
            raise ValueError(f"unknown noise {noise!r}; choose one of {ops.NOISES}")
        self.num_classes, self.feat_dim, self.noise = num_classes, feat_dim, noise
        self.check_values = check_values
        self.mu = nn.Parameter(torch.zeros(num_classes, feat_dim), requires_grad=False)
        self.register_buffer("sigma", torch.ones(num_classes, feat_dim))
        self.initialized = False

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}, noise={self.noise}"

    # -- initialisation -------------------------------------------------------------
    def _as_rows(self, name, value):
        value = torch.as_tensor(value, dtype=self.mu.dtype, device=self.mu.device)
        if value.dim() == 0:
            value = value.expand(self.feat_dim)
        if value.dim() == 1:
            if value.shape[0] != self.feat_dim:
                raise ValueError(f"{name} must have {self.feat_dim} entries; got {value.shape[0]}")
            value = value.expand(self.num_classes, self.feat_dim)
        if tuple(value.shape) != (self.num_classes, self.feat_dim):
            raise ValueError(f"{name} must have shape ({self.num_classes}, {self.feat_dim}); got {tuple(value.shape)}")
        check_finite(name, value)
        return value

    @torch.no_grad()
    def _set(self, mean, std):
        self.mu.copy_(mean)
        self.sigma.copy_(std)
        self.initialized = True
        return self

    def init_from_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Eq. 9-10: ``mu_c``, ``sigma_c`` = per-class mean and std of pre-trained features (C x D).

        D-vectors or scalars give a class-agnostic Gaussian (every class the same).
        (:class:`AdaptivePrior` also resets its ``running_mean`` to ``mu``.)

        Args:
            mean, std: (C, D), (D,) or scalars; finite, ``std >= 0``.

        Returns:
            ``self``, initialised.

        Raises:
            ValueError: a wrong shape, a non-finite value, a negative std, or a ``uniform`` prior.
        """
        if self.noise != "normal":
            raise ValueError("init_from_stats needs a prior built with noise='normal'")
        mean, std = self._as_rows("mean", mean), self._as_rows("std", std)
        if (std < 0).any():
            raise ValueError("std must be non-negative")
        return self._set(mean, std)

    def init_normal(self, mean: float = 0.0, std: float = 1.0) -> None:
        """Class-agnostic ``N(mean, std^2)`` (RandReg with N(0, 1), or with pre-trained statistics).

        Args:
            mean, std: scalars or (D,); finite, ``std >= 0`` (as in :meth:`init_from_stats`).

        Returns:
            ``self``, initialised.

        Raises:
            ValueError: as in :meth:`init_from_stats` (a ``uniform`` prior included).
        """
        return self.init_from_stats(mean, std)

    def init_uniform(self, low: float = 0.0, high: float = 1.0) -> None:
        """Class-agnostic ``U(low, high)`` per coordinate (RandReg U(0,1); PtR's U[0, 2m)).

        Stored as ``mu = (low + high) / 2`` and ``sigma = high - low`` (eps is U[-0.5, 0.5)).

        Args:
            low, high: floats, ``high > low``.

        Returns:
            ``self``, initialised.

        Raises:
            ValueError: ``high <= low``, a non-finite bound, or a ``normal`` prior.
        """
        if self.noise != "uniform":
            raise ValueError("init_uniform needs a prior built with noise='uniform'")
        if not high > low:
            raise ValueError(f"need high > low; got low={low}, high={high}")
        return self._set(self._as_rows("low", (low + high) / 2), self._as_rows("width", high - low))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Initialised by a load only when the state holds this prior's own tensors.

        Detectron2's checkpointer loads with ``strict=False``: pre-trained weights without
        ``...prior.mu`` must leave an uninitialised prior uninitialised, not N(0, 1). Every load
        (``attach``, the trainers' and integrations' checkpoints) passes here: a non-finite tensor of
        :data:`TENSORS` is refused (:class:`NonFinitePriorError`) before anything is copied. A key of
        :data:`_FORMER_KEYS` (a fixed prior's ``running_mean``, from checkpoints written before it moved to
        :class:`AdaptivePrior`) is dropped, so those checkpoints load, strictly too.
        """
        for name in self._FORMER_KEYS:
            state_dict.pop(prefix + name, None)
        for name in self.TENSORS:
            value = state_dict.get(prefix + name)
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                bad = int((~torch.isfinite(value)).sum())
                raise NonFinitePriorError(f"the prior state {prefix + name} holds {bad} NaN/Inf value(s): the "
                                          "checkpoint comes from a run that diverged; resume from an earlier one")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if all(prefix + name in state_dict for name in self.TENSORS):
            self.initialized = True

    # -- the three operations of a training step -------------------------------------
    def _check_initialized(self):
        if not self.initialized:
            raise RuntimeError("the prior is not initialised: call init_from_stats / init_normal / init_uniform first")

    def _check(self, features, labels, checked=False):
        """Initialised, and (unless the caller ``checked`` them already) valid features and labels."""
        self._check_initialized()
        if not checked:
            check_features_labels(features, labels, self.num_classes, self.feat_dim, self.check_values)

    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Eq. 8: ``r_i = mu_{y_i} + sigma_{y_i} * eps_i`` (B x D), never differentiable w.r.t. mu.

        Rows whose label is outside [0, C) (``IGNORE_INDEX``) get class 0's draw: callers mask them.

        Args:
            labels: (B,) int64.
            generator: optional ``torch.Generator`` for eps.

        Returns:
            (B, D) reference vectors in mu's dtype (float32), detached from ``mu``.

        Raises:
            RuntimeError: the prior is not initialised. ValueError / TypeError: bad labels (see the class).
        """
        self._check_initialized()
        check_labels(labels, labels.shape[0], self.num_classes, self.check_values)
        eps = ops.draw_noise((labels.shape[0], self.feat_dim), self.noise, self.mu.device, self.mu.dtype, generator)
        y = ops.safe_labels(labels, ops.active_rows(labels, self.num_classes))
        return self.mu.detach()[y] + self.sigma[y] * eps

    def regression_loss(self, features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                        impl: str | None = None, bad_labels: torch.Tensor | None = None,
                        checked: bool = False) -> torch.Tensor:
        """``mean_{i,d} (f_id - r_id)^2`` over the rows not labelled IGNORE_INDEX (Eq. 1-3 without lambda).

        On CUDA the fused kernel draws the noise in-kernel, so r never exists in memory.

        Args:
            features: (B, D), differentiable. labels: (B,) int64.
            generator: optional ``torch.Generator`` (torch path). impl: ``"torch"``/``"triton"``/None (auto).
            bad_labels: optional 0-dim int64 counter of the labels outside [0, C) other than IGNORE_INDEX
                (see :func:`adarand.ops.target_loss`). checked: the caller validated the inputs already
                (a regularizer does, once per call).

        Returns:
            scalar, float32 (float64 for float64 features); 0 when no row is active.

        Raises:
            RuntimeError: the prior is not initialised. ValueError / TypeError: bad shapes, dtypes or values.
        """
        self._check(features, labels, checked)
        return ops.target_loss(features, labels, self.mu, self.sigma, noise=self.noise, generator=generator, impl=impl,
                               bad_labels=bad_labels)


class AdaptivePrior(ClassConditionalPrior):
    """AdaRand's prior (Sec. 5.2, Algorithm 1): a normal :class:`ClassConditionalPrior` that adapts its own means.

    :meth:`adapt` is the whole adaptation of one training step: the running class means
    (Eq. 14-15), then one step of the prior's own optimizer (:class:`PriorAdam`, ``optimizer``)
    on ``L_mean + L_dist`` (Eq. 11-13) w.r.t. ``mu``; ``sigma`` stays fixed. A batch whose class
    sums are not finite moves nothing (running means, ``mu``, Adam moments), decided on the
    device, and is counted in ``skipped_batches``.

    Args:
        num_classes: C. feat_dim: D. alpha: EMA factor of the running means, in [0, 1].
        lr: the prior optimizer's learning rate, > 0. total_steps: its schedule's length (the run's
            iterations), >= 1, or None (constant). schedule: ``cosine_7_16``, ``half_cosine`` or ``constant``.
        use_mean, use_dist: keep ``L_mean`` / ``L_dist`` (not both False; the paper's ablations, Table 5).
        check_values: as in :class:`ClassConditionalPrior`.

    Shape:
        - mu, sigma, running_mean: (C, D), float32; skipped_batches: scalar int64 (a buffer)
        - features: (B, D); labels: (B,) int64 (or int32), as in :class:`ClassConditionalPrior`

    Raises:
        ValueError: alpha outside [0, 1], both ``use_*`` False, or the errors of :class:`ClassConditionalPrior`
            and :class:`PriorAdam`.
        RuntimeError: :meth:`update_running_mean` or :meth:`adapt` before an init.
    """

    TENSORS = ("mu", "sigma", "running_mean")
    _FORMER_KEYS = ()

    def __init__(self, num_classes: int, feat_dim: int, alpha: float = 0.5, lr: float = 1e-2,
                 total_steps: int | None = None,
                 schedule: str = "cosine_7_16", use_mean: bool = True, use_dist: bool = True,
                 check_values: bool | None = None):
        super().__init__(num_classes, feat_dim, noise="normal", check_values=check_values)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
        if not (use_mean or use_dist):
            raise ValueError("AdaRand's prior needs at least one of use_mean / use_dist")
        self.alpha, self.use_mean, self.use_dist = alpha, use_mean, use_dist
        self.register_buffer("running_mean", torch.zeros(num_classes, feat_dim))
        self.optimizer = PriorAdam((num_classes, feat_dim), lr=lr, total_steps=total_steps, schedule=schedule)
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.int64))  # non-finite batches

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, use_mean={self.use_mean}, use_dist={self.use_dist}"

    @torch.no_grad()
    def _set(self, mean, std):
        super()._set(mean, std)
        self.running_mean.copy_(mean)  # the running means start at mu (Algorithm 1)
        return self

    @torch.no_grad()
    def update_running_mean(self, features: torch.Tensor, labels: torch.Tensor, impl: str | None = None,
                            checked: bool = False) -> torch.Tensor:
        """Eq. 14-15 for every class present in the batch (summed over all ranks); absent classes untouched.

        A batch with non-finite features (in its non-ignored rows) changes nothing; returns
        a 0-dim bool device tensor, True when the batch was applied.

        Args:
            features: (B, D) (detached here). labels: (B,) int64. impl: as in :meth:`regression_loss`.
            checked: as in :meth:`regression_loss`.

        Returns:
            0-dim bool device tensor: True when the batch was applied.
        """
        self._check(features, labels, checked)
        return ops.class_ema_(self.running_mean, features.detach(), labels, self.alpha, impl=impl)

    def prior_loss(self, use_mean: bool = True, use_dist: bool = True, mu: torch.Tensor | None = None) -> torch.Tensor:
        """``L_mean + L_dist`` of Eq. 11-13 evaluated at ``mu`` (default: ``self.mu``).

        Pass a leaf tensor as ``mu`` to differentiate; gradients reach mu only.

        Args:
            use_mean, use_dist: as in :func:`prior_alignment_loss`. mu: (C, D) or None.

        Returns:
            scalar in mu's dtype; differentiable w.r.t. a ``mu`` that requires grad.
        """
        return prior_alignment_loss(self.mu if mu is None else mu, self.running_mean, use_mean, use_dist)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the counter existed load with a count of 0.
        state_dict.setdefault(prefix + "skipped_batches", torch.zeros((), dtype=torch.int64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def adapt(self, features: torch.Tensor, labels: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """Eq. 14-15 (running means), then one optimizer step on ``L_mean + L_dist`` (Eq. 11-13) at ``mu``.

        Without ``L_mean`` the features never reach the prior: the running means stay and no batch is
        skipped. Nothing is read back (no host sync).

        Args:
            features: (B, D) (detached here). labels: (B,) int64 or int32.
            checked: the caller validated the inputs already (a regularizer does, once per call).

        Returns:
            scalar in mu's dtype (float32), ``L_mean + L_dist`` before the update.

        Raises:
            RuntimeError: the prior is not initialised. ValueError / TypeError: bad shapes, dtypes or values.
        """
        self._check(features, labels, checked)
        applied = self.update_running_mean(features, labels, checked=True) if self.use_mean else None
        loss = self.optimizer.update_prior(self.mu, self.running_mean, self.use_mean, self.use_dist, applied)
        if applied is not None:
            self.skipped_batches.add_(applied.logical_not())
        return loss
