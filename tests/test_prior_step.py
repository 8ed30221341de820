"""The prior update without autograd (adarand.ops.prior_step) against autograd and the former update."""
import pytest
import torch

from adarand import PriorAdam, build_regularizer
from adarand.ops.prior_step import lr_factor_tensor, prior_loss_and_grad
from adarand.schedules import lr_factor
from helpers import ref_prior_loss

TERMS = [(True, True), (False, True), (True, False)]


def _inputs(case, dtype=torch.float64):
    g = torch.Generator().manual_seed(7)
    shapes = {"random": (6, 9), "c_gt_d": (11, 4), "one_class": (1, 5), "equal_rows": (5, 8), "zero_rows": (5, 8)}
    num_classes, dim = shapes[case]
    mu = torch.randn(num_classes, dim, generator=g, dtype=dtype)
    running = torch.randn(num_classes, dim, generator=g, dtype=dtype)
    if case == "equal_rows":
        mu[:] = mu[0]
        running[:] = mu[0]
    if case == "zero_rows":
        mu[1] = 0
        running[2] = 0
        running[3] = mu[3] * 2.5  # cos = 1: no L_mean gradient on that row
    return mu, running


@pytest.mark.parametrize("case", ["random", "c_gt_d", "one_class", "equal_rows", "zero_rows"])
@pytest.mark.parametrize("use_mean,use_dist", TERMS)
def test_analytic_gradient_equals_autograd_in_float64(case, use_mean, use_dist, torch_backend):
    # torch_backend: pure functions, no dispatch; run once, not again under the [triton] parametrization
    mu, running = _inputs(case)
    leaf = mu.clone().requires_grad_(True)
    expected_loss = ref_prior_loss(leaf, running, use_mean, use_dist)
    (expected_grad,) = torch.autograd.grad(expected_loss, leaf)
    loss, grad = prior_loss_and_grad(mu, running, use_mean, use_dist)
    torch.testing.assert_close(loss, expected_loss.detach(), rtol=1e-12, atol=1e-12)
    if case == "zero_rows":  # autograd of F.normalize at a zero row: g / eps, no radial term
        leaf = mu.clone().requires_grad_(True)
        from adarand.prior import prior_alignment_loss

        (expected_grad,) = torch.autograd.grad(prior_alignment_loss(leaf, running, use_mean, use_dist), leaf)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("schedule", ["cosine_7_16", "half_cosine", "constant"])
@pytest.mark.parametrize("total_steps", [None, 1, 7])
def test_device_schedule_equals_the_host_one(schedule, total_steps, torch_backend):  # pure: run once
    steps = torch.arange(12)
    factor = lr_factor_tensor(schedule, steps, total_steps)
    expected = [1.0 if total_steps is None else lr_factor(schedule, int(t), total_steps) for t in steps]
    torch.testing.assert_close(factor, torch.tensor(expected, dtype=torch.float64), rtol=1e-14, atol=1e-15)


def _former_step(mu, running, m, v, t, lr_t, use_mean, use_dist, applied, betas=(0.9, 0.999), eps=1e-8):
    """The update before this change: autograd of Eq. 11-13, Adam with host-side scalars, the skip as torch.where."""
    leaf = mu.clone().requires_grad_(True)
    from adarand.prior import prior_alignment_loss

    loss = prior_alignment_loss(leaf, running, use_mean, use_dist)
    (grad,) = torch.autograd.grad(loss, leaf)
    new_m = torch.lerp(m, grad, 1 - betas[0])
    new_v = v * betas[1] + (1 - betas[1]) * grad * grad
    denom = (new_v / (1 - betas[1] ** t)).sqrt() + eps
    new_mu = mu + (-lr_t / (1 - betas[0] ** t)) * new_m / denom
    keep = lambda new, old: torch.where(applied, new, old)  # noqa: E731
    return loss.detach(), keep(new_mu, mu), keep(new_m, m), keep(new_v, v)


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("use_mean,use_dist", TERMS)
@pytest.mark.parametrize("num_classes,dim", [(6, 9), (11, 4)])
def test_adarand_step_equals_the_former_autograd_update(dtype, rtol, use_mean, use_dist, num_classes, dim,
                                                       torch_backend):
    """The PyTorch path (tests/ops/test_prior_step_kernel.py holds the fused kernels to it)."""
    g = torch.Generator().manual_seed(11)
    total = 6
    name = {(True, True): "adarand", (False, True): "adarand-no-mean", (True, False): "adarand-no-dist"}
    reg = build_regularizer(name[(use_mean, use_dist)], num_classes, dim, prior_lr=0.05, total_steps=total,
                            check_values=False)
    reg = reg.to(dtype)
    mean = torch.randn(num_classes, dim, generator=g, dtype=dtype)
    reg.prior.init_from_stats(mean, torch.ones(num_classes, dim, dtype=dtype))
    mu, m, v = mean.clone(), torch.zeros_like(mean), torch.zeros_like(mean)
    for t in range(1, total + 2):
        features = torch.randn(8, dim, generator=g, dtype=dtype)
        if t == 3 and use_mean:
            features[0, 0] = float("nan")  # a skipped batch: nothing moves, the step count advances
        labels = torch.randint(0, num_classes, (8,), generator=g)
        loss = reg.step(features, labels)
        applied = torch.tensor(t != 3 or not use_mean)
        lr_t = 0.05 * lr_factor("cosine_7_16", t - 1, total)
        expected_loss, mu, m, v = _former_step(mu, reg.prior.running_mean, m, v, t, lr_t, use_mean, use_dist, applied)
        for ours, former in ((loss, expected_loss), (reg.prior.mu.detach(), mu), (reg.prior.optimizer.exp_avg, m),
                             (reg.prior.optimizer.exp_avg_sq, v)):  # atol: rtol of the tensor's scale
            torch.testing.assert_close(ours, former, rtol=rtol, atol=rtol * float(former.abs().max()))
    assert int(reg.prior.optimizer.num_steps) == total + 1
    assert int(reg.prior.skipped_batches) == int(use_mean)


def test_no_host_state_changes_per_step():
    """A captured CUDA graph or a compiled step replays as is only if no Python attribute moves."""
    reg = build_regularizer("adarand", 3, 4, total_steps=5, check_values=False)
    reg.prior.init_from_stats(torch.randn(3, 4), torch.ones(3, 4))

    def host_state():
        return {(name, key): value for name, module in reg.named_modules() for key, value in vars(module).items()
                if not key.startswith("_")}

    before = host_state()
    for _ in range(3):
        reg.step(torch.randn(6, 4), torch.randint(0, 3, (6,)))
    assert host_state() == before


def test_prior_adam_has_no_host_step_counter():
    optim = PriorAdam((2, 3), total_steps=4)
    optim.step(torch.zeros(2, 3), torch.ones(2, 3))
    assert "steps_taken" not in vars(optim) and optim.steps_taken == 1 and int(optim.num_steps) == 1
