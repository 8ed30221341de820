"""Random-target regression loss: ``mean_{i,d} (f_id - (mu_{y_i,d} + sigma_{y_i,d} eps_id))^2``.

AdaRand/RandReg (Eq. 1-3, 8) regress features onto reference vectors drawn from the
prior; FNP is the same loss with target 0. ``eps`` is standard normal, or uniform on
[-0.5, 0.5) so that ``mu + sigma * eps`` is U[mu - sigma/2, mu + sigma/2).
"""
import torch

from .backend import resolve

NOISES = ("normal", "uniform")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp16/bf16 inputs accumulate in fp32; fp32 and fp64 keep their precision."""
    return torch.promote_types(dtype, torch.float32)


def draw_noise(shape, noise: str, device, dtype, generator=None) -> torch.Tensor:
    """eps ~ N(0, 1) (``normal``) or U[-0.5, 0.5) (``uniform``)."""
    if noise == "normal":
        return torch.randn(shape, device=device, dtype=dtype, generator=generator)
    if noise == "uniform":
        return torch.rand(shape, device=device, dtype=dtype, generator=generator) - 0.5
    raise ValueError(f"unknown noise {noise!r}; choose one of {NOISES}")


def _target_loss_ref(features, labels, mu, sigma, eps):
    """Reference: the loss with the noise given explicitly (``mu is None``: target 0)."""
    acc = accumulation_dtype(features.dtype)
    f = features.to(acc)
    if mu is None:
        diff = f
    else:
        diff = f - (mu[labels].to(acc) + sigma[labels].to(acc) * eps.to(acc))
    return diff.pow(2).sum() / max(diff.numel(), 1)


def target_loss(features, labels=None, mu=None, sigma=None, *, noise="normal", generator=None, impl=None):
    """Mean squared distance of ``features`` (B x D) to reference vectors of ``labels``.

    ``mu``/``sigma`` are C x D and are never differentiated; ``mu=None`` regresses onto
    zero (FNP). Returns 0 for an empty batch. ``impl`` overrides the backend.
    """
    if mu is not None:
        mu, sigma = mu.detach(), sigma.detach()
    if resolve(features, impl) == "triton":
        from .target_loss_triton import target_loss_triton

        return target_loss_triton(features, labels, mu, sigma, noise=noise, generator=generator)
    eps = None
    if mu is not None:
        eps = draw_noise(features.shape, noise, features.device, accumulation_dtype(features.dtype), generator)
    return _target_loss_ref(features, labels, mu, sigma, eps)
