"""Random-target regression loss: ``sum_{i active, d} (f_id - (mu_{y_i,d} + sigma_{y_i,d} eps_id))^2 / (n D)``.

AdaRand/RandReg (Eq. 1-3, 8) regress features onto reference vectors drawn from the
prior; FNP is the same loss with target 0. ``eps`` is standard normal, or uniform on
[-0.5, 0.5) so that ``mu + sigma * eps`` is U[mu - sigma/2, mu + sigma/2).

Row i is *active* when its label lies in [0, C). Rows labelled :data:`IGNORE_INDEX`
(as in ``cross_entropy(ignore_index=-100)``) stay in place but contribute nothing: no
loss, no gradient; ``n`` counts the active rows (on the device, clamped to 1, so an
all-ignored batch gives 0 without a host sync). Labels outside [0, C) that are not
IGNORE_INDEX are masked the same way, so nothing is ever read out of bounds; the
regularizers count them (see ``Regularizer.check_device_errors``).
"""
import torch

from .backend import resolve

NOISES = ("normal", "uniform")
IGNORE_INDEX = -100  # label of rows kept in place that contribute nothing (torch's cross_entropy default)


def active_rows(labels: torch.Tensor, num_classes=None) -> torch.Tensor:
    """Bool (B,): ``0 <= y_i < C`` (``num_classes=None``: any ``y_i >= 0``).

    Args:
        labels: (B,) integer labels (``IGNORE_INDEX`` = -100 is inactive). num_classes: C or None.

    Returns:
        (B,) bool, on the labels' device.
    """
    active = labels >= 0
    return active if num_classes is None else active & (labels < num_classes)


def safe_labels(labels: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Labels with the inactive rows sent to class 0, so gathers stay in bounds.

    Args:
        labels: (B,). active: (B,) bool, from :func:`active_rows`.

    Returns:
        (B,), the labels' dtype: ``labels`` where active, else 0.
    """
    return torch.where(active, labels, torch.zeros_like(labels))


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs accumulate in fp32; fp32 and fp64 keep their precision."""
    return torch.promote_types(dtype, torch.float32)


def draw_noise(shape, noise: str, device, dtype, generator=None) -> torch.Tensor:
    """eps ~ N(0, 1) (``normal``) or U[-0.5, 0.5) (``uniform``), from torch's RNG.

    Args:
        shape: e.g. (B, D). noise: one of ``NOISES``. device, dtype: of the result.
        generator: optional ``torch.Generator``.

    Returns:
        a tensor of ``shape``, ``dtype``, on ``device``.

    Raises:
        ValueError: an unknown ``noise``.
    """
    if noise == "normal":
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if noise == "uniform":
        return torch.rand(shape, device=device, dtype=dtype, generator=generator) - 0.5
    raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")


def _target_loss_ref(features, labels, mu, sigma, eps, num_classes=None):
    """Reference: the loss with the noise given explicitly (``mu is None``: target 0).

    ``labels=None`` makes every row active (FNP without labels); C is ``mu.shape[0]``,
    or ``num_classes`` without a prior.
    """
    acc = accumulation_dtype(features.dtype)
    f = features.to(acc)
    if labels is None:
        active = torch.ones(f.shape[0], dtype=torch.bool, device=f.device)
    else:
        active = active_rows(labels, mu.shape[0] if mu is not None else num_classes)
    if mu is not None:
        y = safe_labels(labels, active)
        f = f - (mu[y].to(acc) + sigma[y].to(acc) * eps.to(acc))
    diff = torch.where(active[:, None], f, torch.zeros((), dtype=acc, device=f.device))
    return diff.pow(2).sum() / (active.sum().clamp(min=1) * max(f.shape[1], 1))


def target_loss(features, labels=None, mu=None, sigma=None, *, noise="normal", generator=None, impl=None,
                num_classes=None):
    """Mean squared distance of the active rows of ``features`` (B x D) to reference vectors of ``labels``.

    ``mu``/``sigma`` are C x D and are never differentiated; ``mu=None`` regresses onto
    zero (FNP; ``labels``, if given, select the active rows, with ``num_classes`` as C).
    Returns 0 when no row is active. ``impl`` overrides the backend.

    ``loss = sum_{i active, d} (f_id - mu_{y_i d} - sigma_{y_i d} eps_id)^2 / (n_active D)``,
    eps drawn per call (torch's RNG on the torch path; Philox in-kernel on the Triton path).

    Args:
        features: (B, D), fp32/bf16/fp16 (accumulated in fp32), differentiable.
        labels: (B,) int64 or None (every row active). mu, sigma: (C, D) or None.
        noise: ``"normal"`` or ``"uniform"``. generator: optional ``torch.Generator`` (seeds both paths).
        impl: ``"torch"``, ``"triton"`` or None (:func:`adarand.get_backend`). num_classes: C without a prior.

    Returns:
        scalar in the accumulation dtype, differentiable w.r.t. ``features``.
    """
    if mu is not None:
        mu, sigma = mu.detach(), sigma.detach()
    if resolve(features, impl) == "triton":
        from .target_loss_triton import target_loss_triton

        return target_loss_triton(features, labels, mu, sigma, noise=noise, generator=generator,
                                  num_classes=num_classes)
    eps = None
    if mu is not None:
        eps = draw_noise(features.shape, noise, features.device, accumulation_dtype(features.dtype), generator)
    return _target_loss_ref(features, labels, mu, sigma, eps, num_classes)
