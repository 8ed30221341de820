"""AdaRand's prior update without autograd: the analytic gradient of Eq. 11-13, then Adam.

With ``u_c = mu_c / max(|mu_c|, eps)`` (``F.normalize``), ``v_c`` the normalised running
mean ``m_c`` and ``g_c = 1 - u_c . v_c``:

- ``L_mean = (1/C) sum_c g_c^2``, so ``dL_mean/du_c = -(2/C) g_c v_c``;
- ``L_dist = (||U U^T||_F^2 - sum_c |u_c|^4) / (C (C-1))`` (the diagonal of the Gram matrix
  is ``|u_c|^2``: 1, or 0 for a zero row), so ``dL_dist/dU = 4 (U U^T U - diag(|u_c|^2) U) / (C (C-1))``;
  ``U U^T U`` is ``(U U^T) U`` with the C x C Gram matrix, or ``U (U^T U)`` with the D x D one when C > D;
- back through the normalisation: ``dL/dmu_c = (w_c - [|mu_c| >= eps] (u_c . w_c) u_c) / max(|mu_c|, eps)``
  with ``w_c = dL/du_c`` (a zero row has no radial term, as in autograd's ``clamp_min``).

Adam then moves mu with ``lr_t = lr * factor(t)`` of the prior's schedule, the step count
``t`` read from a device tensor, so nothing on the host changes from step to step (a
CUDA graph or a compiled step replays as is). ``applied`` (a 0-dim bool device tensor,
False for a skipped non-finite batch) keeps mu and the moments where they were; the step
count advances either way.

:func:`prior_step_` is the one entry point: the PyTorch path below (the specification;
``torch.compile`` traces it and fuses the elementwise work), or the fused Triton kernels
of ``prior_step_triton.py`` behind the custom op ``adarand::prior_step_``.
"""
from typing import Optional

import torch

from ..schedules import SCHEDULES, check_warmup, lr_factor
from .backend import HAS_TRITON, resolve, triton_interpreter_on
from .common import NORM_EPS


def prior_loss_and_grad(mu: torch.Tensor, running_mean: torch.Tensor, use_mean: bool = True,
                        use_dist: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, dL/dmu)`` of ``L = L_mean + L_dist`` (Eq. 11-13), analytically (module docstring).

    Args:
        mu, running_mean: (C, D). use_mean, use_dist: keep ``L_mean`` / ``L_dist``.

    Returns:
        ``(loss, grad)``: a scalar and a (C, D) tensor in mu's dtype, neither differentiable.
    """
    num_classes, feat_dim = mu.shape
    norm = torch.linalg.vector_norm(mu, dim=1, keepdim=True)
    denom = norm.clamp_min(NORM_EPS)
    unit = mu / denom
    loss = mu.new_zeros(())
    grad_unit = torch.zeros_like(mu)
    if use_mean:
        target = torch.nn.functional.normalize(running_mean.to(mu.dtype), dim=1)
        gap = 1 - (unit * target).sum(dim=1, keepdim=True)
        loss = gap.square().mean()
        grad_unit = (-2.0 / num_classes) * gap * target
    # Traced by torch.compile, use_dist=False keeps L_dist's terms with weight 0 (adding exactly nothing: they are
    # finite, or the loss is NaN already). A workaround of an inductor bug: its CPU code generation fails on the
    # mean term alone after the running means' in-place update (``KeyError: 'bufN'`` in the outer-loop fusion's
    # local buffers, pytorch/pytorch#196570); the Gram matmuls split that fused loop. Eager runs skip them.
    if num_classes > 1 and (use_dist or torch.compiler.is_compiling()):
        scale = 1.0 / (num_classes * (num_classes - 1)) if use_dist else 0.0
        self_sq = unit.square().sum(dim=1, keepdim=True)
        if num_classes <= feat_dim:
            gram = unit @ unit.T
            gram_unit = gram @ unit
        else:
            gram = unit.T @ unit
            gram_unit = unit @ gram
        loss = loss + (gram.square().sum() - self_sq.square().sum()) * scale
        grad_unit = grad_unit + (4.0 * scale) * (gram_unit - self_sq * unit)
    radial = (unit * grad_unit).sum(dim=1, keepdim=True)
    radial = torch.where(norm >= NORM_EPS, radial, torch.zeros_like(radial))
    return loss, (grad_unit - radial * unit) / denom


def lr_factor_tensor(schedule: str, steps: torch.Tensor, total_steps: int | None, warmup: int = 0) -> torch.Tensor:
    """The schedule factor at ``steps`` updates taken, as a float64 device tensor: ``schedules.lr_factor`` on it.

    Args:
        schedule: one of ``schedules.SCHEDULES``. steps: int64 tensor. total_steps: int >= 1, or None (1).
        warmup: steps of linear warm-up (``cosine_7_16`` only).

    Returns:
        float64 tensor of ``steps``' shape.
    """
    t = steps.to(torch.float64)
    if total_steps is None:
        return torch.ones_like(t)
    return lr_factor(schedule, t, total_steps, warmup)


def adam_update_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                 num_steps: torch.Tensor, *, lr: float, beta1: float, beta2: float, eps: float, schedule: str,
                 total_steps: int | None, applied: torch.Tensor | None = None, warmup: int = 0) -> None:
    """One Adam step of ``param`` in place (``torch.optim.Adam``'s, no weight decay), ``t = num_steps + 1``.

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``,
    ``param <- param - lr_t / (1-b1^t) * m / (sqrt(v / (1-b2^t)) + eps)``, ``lr_t = lr * factor(t - 1)``;
    the bias corrections and ``lr_t`` are computed on the device in float64. Where ``applied``
    is False nothing but ``num_steps`` moves. Elementwise ops only: one fused kernel under
    ``torch.compile``.

    Args:
        param, grad, exp_avg, exp_avg_sq: (C, D). num_steps: 0-dim int64, incremented.
        lr, beta1, beta2, eps: floats. schedule, total_steps, warmup: as in :func:`lr_factor_tensor`.
        applied: 0-dim bool tensor or None (always applied).

    Returns:
        None.
    """
    t = (num_steps + 1).to(torch.float64)
    step_size = (lr * lr_factor_tensor(schedule, num_steps, total_steps, warmup) / (1 - beta1 ** t)).to(param.dtype)
    bias2 = (1 - beta2 ** t).to(param.dtype)
    new_avg = torch.lerp(exp_avg, grad, 1 - beta1)
    new_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    new_param = param - step_size * new_avg / ((new_avg_sq / bias2).sqrt() + eps)
    if applied is not None:
        new_param = torch.where(applied, new_param, param)
        new_avg = torch.where(applied, new_avg, exp_avg)
        new_avg_sq = torch.where(applied, new_avg_sq, exp_avg_sq)
    param.copy_(new_param)
    exp_avg.copy_(new_avg)
    exp_avg_sq.copy_(new_avg_sq)
    num_steps.add_(1)


def _prior_step_ref_(mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, lr, beta1, beta2, eps, schedule,
                     total_steps, use_mean, use_dist, warmup=0):
    loss, grad = prior_loss_and_grad(mu, running_mean, use_mean, use_dist)
    adam_update_(mu, grad, exp_avg, exp_avg_sq, num_steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                 schedule=schedule, total_steps=total_steps, applied=applied, warmup=warmup)
    return loss


@torch.library.custom_op("adarand::prior_step_", mutates_args=("mu", "exp_avg", "exp_avg_sq", "num_steps"))
def _prior_step_op(mu: torch.Tensor, running_mean: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                   num_steps: torch.Tensor, applied: Optional[torch.Tensor], lr: float, beta1: float, beta2: float,
                   eps: float, schedule: str, total_steps: Optional[int], use_mean: bool, use_dist: bool,
                   warmup: int = 0) -> torch.Tensor:
    """The fused prior update as an opaque op (Triton kernels)."""
    from .prior_step_triton import prior_step_triton_

    return prior_step_triton_(mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, lr, beta1, beta2, eps,
                              schedule, total_steps, use_mean, use_dist, warmup)


@_prior_step_op.register_kernel("cpu")
def _prior_step_cpu(mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, lr, beta1, beta2, eps, schedule,
                    total_steps, use_mean, use_dist, warmup=0):
    """The PyTorch reference on CPU tensors (the Triton kernels only under ``TRITON_INTERPRET=1``)."""
    args = (mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, lr, beta1, beta2, eps, schedule,
            total_steps, use_mean, use_dist, warmup)
    if HAS_TRITON and triton_interpreter_on():
        from .prior_step_triton import prior_step_triton_

        return prior_step_triton_(*args)
    return _prior_step_ref_(*args)


@_prior_step_op.register_fake
def _prior_step_fake(mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, lr, beta1, beta2, eps, schedule,
                     total_steps, use_mean, use_dist, warmup=0):
    return mu.new_empty(())


@torch.no_grad()
def prior_step_(mu: torch.Tensor, running_mean: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                num_steps: torch.Tensor, applied: torch.Tensor | None = None, *, lr: float, beta1: float = 0.9,
                beta2: float = 0.999, eps: float = 1e-8, schedule: str = "cosine_7_16", total_steps: int | None = None,
                use_mean: bool = True, use_dist: bool = True, warmup: int = 0, impl: str | None = None) -> torch.Tensor:
    """One prior update in place: gradient of ``L_mean + L_dist`` at mu, then Adam; returns L before the update.

    Nothing is read back to the host; ``num_steps`` (the schedule's ``t``) is a device tensor.

    Args:
        mu: (C, D), updated. running_mean: (C, D). exp_avg, exp_avg_sq: (C, D), updated.
        num_steps: 0-dim int64, incremented. applied: 0-dim bool or None (see :func:`adam_update_`).
        lr, beta1, beta2, eps: Adam's. schedule, total_steps, warmup: the lr schedule (:func:`lr_factor_tensor`).
        use_mean, use_dist: the loss terms. impl: ``"torch"``, ``"triton"`` or None (the backend setting).

    Returns:
        scalar in mu's dtype, ``L_mean + L_dist`` at mu before the update.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown prior lr schedule {schedule!r}; expected one of {SCHEDULES}")
    check_warmup(schedule, warmup)
    args = (mu, running_mean, exp_avg, exp_avg_sq, num_steps, applied, float(lr), float(beta1), float(beta2),
            float(eps), schedule)
    if resolve(mu, impl) == "triton":
        return _prior_step_op(*args, None if total_steps is None else int(total_steps), bool(use_mean), bool(use_dist),
                              int(warmup))
    return _prior_step_ref_(*args, total_steps, use_mean, use_dist, warmup)
