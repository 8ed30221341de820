"""Random-target regression loss: ``sum_{i active, d} (f_id - (mu_{y_i,d} + sigma_{y_i,d} eps_id))^2 / (n D)``.

AdaRand/RandReg (Eq. 1-3, 8) regress features onto reference vectors drawn from the
prior; FNP is the same loss with target 0. ``eps`` is standard normal, or uniform on
[-0.5, 0.5) so that ``mu + sigma * eps`` is U[mu - sigma/2, mu + sigma/2).

Row i is *active* when its label lies in [0, C). Rows labelled :data:`adarand.IGNORE_INDEX`
(as in ``cross_entropy(ignore_index=-100)``) stay in place but contribute nothing: no
loss, no gradient; ``n`` counts the active rows (on the device, clamped to 1, so an
all-ignored batch gives 0 without a host sync). Labels outside [0, C) that are not
IGNORE_INDEX are masked the same way, so nothing is ever read out of bounds; the
regularizers count them (see ``Regularizer.check_device_errors``).
"""
from typing import Optional, cast

import torch

from .backend import HAS_TRITON, resolve, triton_interpreter_on
from .common import NOISES, accumulation_dtype, active_rows, count_bad_labels, safe_labels


def draw_noise(shape: tuple[int, ...], noise: str, device: torch.device | str, dtype: torch.dtype,
               generator: torch.Generator | None = None) -> torch.Tensor:
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


def _residual(features, labels, mu, sigma, eps, num_classes=None):
    """(f - r on the active rows, 0 elsewhere, in the accumulation dtype; the active rows).

    ``mu is None``: target 0; ``labels=None`` makes every row active (FNP without labels); C is
    ``mu.shape[0]``, or ``num_classes`` without a prior.
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
    return torch.where(active[:, None], f, torch.zeros((), dtype=acc, device=f.device)), active


def _normalised_loss(diff, count):
    """``sum diff^2 / (max(n, 1) D)`` from the B x D residual and the 0-dim active-row count n (on the device)."""
    return diff.pow(2).sum() / (count.clamp(min=1) * max(diff.shape[1], 1))


def _target_loss_ref(features, labels, mu, sigma, eps, num_classes=None):
    """Reference: the loss ``sum (f - r)^2 / (active rows * D)`` with the noise given explicitly (:func:`_residual`)."""
    diff, active = _residual(features, labels, mu, sigma, eps, num_classes)
    return _normalised_loss(diff, active.sum())


# -- the fused kernels as custom ops (Triton on CUDA; on CPU the reference, or the kernels under the interpreter) --
def _interpreted():
    return HAS_TRITON and triton_interpreter_on()


def _seeded_noise(features, noise, seed):
    """The CPU kernels' eps: torch's RNG seeded from ``seed`` (not the Triton kernels' Philox numbers)."""
    generator = torch.Generator(device=features.device).manual_seed(int(seed.reshape(-1)[0]))
    return draw_noise(features.shape, noise, features.device, accumulation_dtype(features.dtype), generator)


def _reference_residual(features, labels, mu, sigma, seed, noise, num_classes):
    """(f - r on the active rows, 0 elsewhere, in the accumulation dtype; active-row count, int64)."""
    eps = _seeded_noise(features, noise, seed) if mu is not None else None
    diff, active = _residual(features, labels, mu, sigma, eps, num_classes)
    return diff, active.sum()


@torch.library.custom_op("adarand::target_loss_fwd", mutates_args=())
def _target_loss_fwd_op(features: torch.Tensor, labels: Optional[torch.Tensor], mu: Optional[torch.Tensor],
                        sigma: Optional[torch.Tensor], seed: Optional[torch.Tensor], noise: str,
                        num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, n, bad)`` of the fused target loss (n: active rows; bad: rows labelled outside [0, C) other than
    IGNORE_INDEX; both int64)."""
    from .target_loss_triton import target_loss_fwd_triton

    return target_loss_fwd_triton(features, labels, mu, sigma, seed, noise, num_classes)


@_target_loss_fwd_op.register_kernel("cpu")
def _target_loss_fwd_cpu(features, labels, mu, sigma, seed, noise, num_classes):
    if _interpreted():
        from .target_loss_triton import target_loss_fwd_triton

        return target_loss_fwd_triton(features, labels, mu, sigma, seed, noise, num_classes)
    diff, count = _reference_residual(features, labels, mu, sigma, seed, noise, num_classes)
    return _normalised_loss(diff, count), count, count_bad_labels(labels, num_classes)


@_target_loss_fwd_op.register_fake
def _target_loss_fwd_fake(features, labels, mu, sigma, seed, noise, num_classes):
    acc = accumulation_dtype(features.dtype)
    return (features.new_empty((), dtype=acc), features.new_empty((), dtype=torch.int64),
            features.new_empty((), dtype=torch.int64))


@torch.library.custom_op("adarand::target_loss_bwd", mutates_args=())
def _target_loss_bwd_op(grad_out: torch.Tensor, features: torch.Tensor, labels: Optional[torch.Tensor],
                        mu: Optional[torch.Tensor], sigma: Optional[torch.Tensor], seed: Optional[torch.Tensor],
                        count: torch.Tensor, noise: str, num_classes: int) -> torch.Tensor:
    """``dL/df = g 2 (f - r) / (max(n, 1) D)`` on the active rows, 0 elsewhere, in the features' dtype."""
    from .target_loss_triton import target_loss_bwd_triton

    return target_loss_bwd_triton(grad_out, features, labels, mu, sigma, seed, count, noise, num_classes)


@_target_loss_bwd_op.register_kernel("cpu")
def _target_loss_bwd_cpu(grad_out, features, labels, mu, sigma, seed, count, noise, num_classes):
    if _interpreted():
        from .target_loss_triton import target_loss_bwd_triton

        return target_loss_bwd_triton(grad_out, features, labels, mu, sigma, seed, count, noise, num_classes)
    diff, _ = _reference_residual(features, labels, mu, sigma, seed, noise, num_classes)
    scale = grad_out.to(diff.dtype) * 2.0 / (count.clamp(min=1) * max(features.shape[1], 1))
    return (diff * scale).to(features.dtype)


@_target_loss_bwd_op.register_fake
def _target_loss_bwd_fake(grad_out, features, labels, mu, sigma, seed, count, noise, num_classes):
    return torch.empty_like(features)


def _target_loss_setup_context(ctx, inputs, output):
    features, labels, mu, sigma, seed, noise, num_classes = inputs
    ctx.save_for_backward(features, labels, mu, sigma, seed, output[1])
    ctx.noise, ctx.num_classes = noise, num_classes
    ctx.set_materialize_grads(False)  # the counts get no gradient: no zero tensors for them


def _target_loss_backward(ctx, grad_loss, grad_count, grad_bad):
    features, labels, mu, sigma, seed, count = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0] and grad_loss is not None:
        grad = _target_loss_bwd_op(grad_loss, features, labels, mu, sigma, seed, count, ctx.noise, ctx.num_classes)
    return grad, None, None, None, None, None, None


_target_loss_fwd_op.register_autograd(_target_loss_backward, setup_context=_target_loss_setup_context)


def draw_seed(device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A 1-element int64 seed drawn by torch's RNG (``generator``'s device, else ``device``), on ``device``."""
    source = generator.device if generator is not None else device
    seed = torch.randint(0, torch.iinfo(torch.int64).max, (1,), device=source, dtype=torch.int64, generator=generator)
    return seed.to(device, non_blocking=True)


_MAX_ELEMENTS = 2**31  # the fused kernels' Philox counters are int32 element indices
_NO_CLASS_LIMIT = 2**31 - 1  # C for FNP without num_classes: any label >= 0 is active


def target_loss_triton(features: torch.Tensor, labels: torch.Tensor | None, mu: torch.Tensor | None,
                       sigma: torch.Tensor | None, *, noise: str = "normal", generator: torch.Generator | None = None,
                       seed: torch.Tensor | None = None, num_classes: int | None = None,
                       bad_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Fused ``sum_{i active, d} (f_id - (mu_{y_i,d} + sigma_{y_i,d} eps_id))^2 / (n D)``; ``mu=None``: target 0.

    Active rows: ``0 <= y_i < C`` (C = ``mu.shape[0]``, or ``num_classes`` without a
    prior; every row when ``labels`` is None). ``seed`` (1-element int64 tensor on the
    features' device) fixes the noise, for tests; by default a fresh one is drawn from
    torch's RNG (``generator`` if given). ``bad_labels``: an optional int64 counter that gains the number
    of rows labelled outside [0, C) other than IGNORE_INDEX (counted by the kernel).
    """
    if noise not in NOISES:
        raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")
    if features.dim() != 2:
        raise ValueError(f"features must be B x D; got shape {tuple(features.shape)}")
    if features.numel() >= _MAX_ELEMENTS:
        raise ValueError(f"the fused target loss takes fewer than 2**31 elements; got {features.numel()}")
    features = features.contiguous()
    if labels is not None and tuple(labels.shape) != tuple(features.shape[:1]):
        raise ValueError(f"labels must have shape ({features.shape[0]},); got {tuple(labels.shape)}")
    if mu is None:  # FNP: no noise; labels, if any, only select the active rows
        labels = None if labels is None else labels.contiguous()
        limit = _NO_CLASS_LIMIT if num_classes is None else num_classes
        return _counted(_target_loss_fwd_op(features, labels, None, None, None, noise, limit), bad_labels)
    labels, sigma = cast(torch.Tensor, labels), cast(torch.Tensor, sigma)  # for the type checker: they come with mu
    if tuple(mu.shape) != tuple(sigma.shape) or mu.dim() != 2 or mu.shape[1] != features.shape[1]:
        raise ValueError(f"mu and sigma must be C x {features.shape[1]}; got {tuple(mu.shape)}, {tuple(sigma.shape)}")
    labels, mu, sigma = labels.contiguous(), mu.detach().contiguous(), sigma.detach().contiguous()
    if seed is None:
        seed = draw_seed(features.device, generator)
    return _counted(_target_loss_fwd_op(features, labels, mu, sigma, seed, noise, mu.shape[0]), bad_labels)


def _counted(outputs, bad_labels):
    """The loss of the forward op's ``(loss, n, bad)``, after adding ``bad`` to the ``bad_labels`` counter (if any)."""
    if bad_labels is not None:
        bad_labels.add_(outputs[2])
    return outputs[0]


def target_loss(features: torch.Tensor, labels: torch.Tensor | None = None, mu: torch.Tensor | None = None,
                sigma: torch.Tensor | None = None, *, noise: str = "normal", generator: torch.Generator | None = None,
                impl: str | None = None, num_classes: int | None = None,
                bad_labels: torch.Tensor | None = None) -> torch.Tensor:
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
        bad_labels: optional 0-dim int64 counter, increased by the number of labels outside [0, C) other than
            IGNORE_INDEX (on the Triton path the loss kernel counts them: no launch of its own).

    Returns:
        scalar in the accumulation dtype, differentiable w.r.t. ``features``.
    """
    if mu is not None:
        mu, sigma = mu.detach(), sigma.detach()  # type: ignore[union-attr]  # mu and sigma come together
    if resolve(features, impl) == "triton":
        return target_loss_triton(features, labels, mu, sigma, noise=noise, generator=generator,
                                  num_classes=num_classes, bad_labels=bad_labels)
    if bad_labels is not None and labels is not None:
        bad_labels += count_bad_labels(labels, mu.shape[0] if mu is not None else num_classes).to(bad_labels.device)
    eps = None
    if mu is not None:
        eps = draw_noise(features.shape, noise, features.device, accumulation_dtype(features.dtype), generator)
    return _target_loss_ref(features, labels, mu, sigma, eps, num_classes)
