"""Fused kernels with IGNORE_INDEX and out-of-range labels vs the torch path and a float64 row loop."""
import pytest
import torch

from adarand import IGNORE_INDEX
from adarand.ops.class_ema import _class_sums_ref, class_ema_
from adarand.ops.target_loss import _target_loss_ref
from helpers import ref_ema, ref_regression_active

# (B, C, D): odd sizes, one class, many row blocks of the class sums
_SHAPES = [(1, 1, 5), (7, 3, 41), (33, 1, 9), (70, 10, 129)]


def _labels(batch, num_classes, g, device):
    """Valid labels, about a third IGNORE_INDEX, and a few out of range on both sides (the kernels mask those)."""
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    draw = torch.rand(batch, generator=g)
    labels[draw < 0.33] = IGNORE_INDEX
    labels[(draw > 0.9) & (draw < 0.95)] = num_classes + 1000
    labels[draw >= 0.95] = -7
    return labels.to(device)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
@pytest.mark.parametrize("batch, num_classes, dim", _SHAPES)
def test_target_loss_skips_inactive_rows(device, batch, num_classes, dim, noise):
    from adarand.ops.target_loss import target_loss_triton

    from noise_probe import noise_from_seed

    g = torch.Generator().manual_seed(batch + dim)
    f = torch.randn(batch, dim, generator=g).to(device).requires_grad_(True)
    y = _labels(batch, num_classes, g, device)
    mu = torch.randn(num_classes, dim, generator=g).to(device)
    sigma = (torch.rand(num_classes, dim, generator=g) + 0.1).to(device)
    seed = torch.tensor([77], dtype=torch.int64, device=device)
    loss = target_loss_triton(f, y, mu, sigma, noise=noise, seed=seed)
    eps = noise_from_seed(seed, (batch, dim), noise)
    ref = _target_loss_ref(f, y, mu, sigma, eps)
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    active = (y >= 0) & (y < num_classes)
    targets = mu.double()[y.clamp(0, num_classes - 1)] + sigma.double()[y.clamp(0, num_classes - 1)] * eps.double()
    torch.testing.assert_close(loss.double(), ref_regression_active(f.detach().cpu(), targets.cpu(), y.cpu(),
                                                                    num_classes).to(device), atol=1e-6, rtol=1e-5)
    grad_out = torch.tensor(-1.5, device=device)
    (grad,) = torch.autograd.grad(loss, f, grad_out)
    (grad_ref,) = torch.autograd.grad(ref, f, grad_out)
    torch.testing.assert_close(grad, grad_ref, atol=1e-7, rtol=1e-5)
    assert not grad[~active].any()


def test_all_ignored_and_fnp_with_labels(device):
    from adarand.ops.target_loss import target_loss_triton

    f = torch.randn(6, 13, device=device, requires_grad=True)
    mu, sigma = torch.randn(3, 13, device=device), torch.ones(3, 13, device=device)
    loss = target_loss_triton(f, torch.full((6,), IGNORE_INDEX, device=device), mu, sigma)
    (grad,) = torch.autograd.grad(loss, f)
    assert loss.item() == 0.0 and not grad.any()
    y = torch.tensor([0, IGNORE_INDEX, 2, 1, 5, IGNORE_INDEX], device=device)
    fnp = target_loss_triton(f, y, None, None, num_classes=3)
    active = torch.tensor([True, False, True, True, False, False], device=device)
    torch.testing.assert_close(fnp, f.detach()[active].pow(2).mean())
    (grad,) = torch.autograd.grad(fnp, f)
    torch.testing.assert_close(grad, torch.where(active[:, None], 2 * f.detach() / (3 * 13), 0.0))


@pytest.mark.parametrize("batch, num_classes, dim", _SHAPES + [(64, 2, 5)])
def test_class_sums_and_ema_skip_inactive_rows(device, batch, num_classes, dim):
    from adarand.ops.class_ema_triton import class_sums_triton

    g = torch.Generator().manual_seed(batch)
    f = torch.randn(batch, dim, generator=g).to(device)
    y = _labels(batch, num_classes, g, device)
    if batch == 64:  # ignored rows sort first and used to take segment ids from the valid classes
        y = torch.cat([torch.full((10,), IGNORE_INDEX), torch.zeros(30, dtype=torch.int64),
                       torch.ones(24, dtype=torch.int64)]).to(device)
    out = class_sums_triton(f, y, num_classes)
    ref = _class_sums_ref(f, y, num_classes)
    assert torch.equal(out[:, -1], ref[:, -1])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    start = torch.randn(num_classes, dim, generator=g, dtype=torch.float64).to(device)
    ours = start.clone()
    assert class_ema_(ours, f.double(), y, 0.25, impl="triton")
    torch.testing.assert_close(ours.cpu(), ref_ema(start.cpu(), f.cpu(), y.cpu(), 0.25), atol=1e-12, rtol=1e-12)
