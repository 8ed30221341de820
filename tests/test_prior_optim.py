import math

import pytest
import torch

from adarand import AdaptivePrior, ClassStats, PriorAdam, build_regularizer
from helpers import ref_ema, ref_prior_loss


def _official_factor(t, total):
    """The official code's prior schedule (util/train_util.py, no warm-up), t = updates taken."""
    return max(0.0, math.cos(math.pi * 7 / 16 * min(t / total, 1.0)))


def _torch_schedule(name, optimizer, total_steps):
    if name == "half_cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: _official_factor(t, total_steps))


@pytest.mark.parametrize("total_steps,schedule", [(None, "cosine_7_16"), (10, "cosine_7_16"), (10, "half_cosine")])
def test_matches_torch_adam_with_its_schedule(total_steps, schedule):
    g = torch.Generator().manual_seed(0)
    start = torch.randn(3, 5, generator=g, dtype=torch.float64)
    grads = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(10)]
    ours, opt_param = start.clone(), torch.nn.Parameter(start.clone())
    optim = PriorAdam((3, 5), lr=1e-2, total_steps=total_steps, schedule=schedule).double()
    reference = torch.optim.Adam([opt_param], lr=1e-2)
    schedule = _torch_schedule(schedule, reference, total_steps) if total_steps else None
    for grad in grads:
        optim.step(ours, grad)
        opt_param.grad = grad.clone()
        reference.step()
        if schedule:
            schedule.step()
        torch.testing.assert_close(ours, opt_param.detach())


def test_official_schedule_ends_at_cos_7pi_16_and_holds():
    optim, param = PriorAdam((2, 2), lr=1.0, total_steps=4), torch.zeros(2, 2)
    lrs = []
    for _ in range(6):
        lrs.append(optim.current_lr())
        optim.step(param, torch.ones(2, 2))
    expected = [math.cos(math.pi * 7 / 16 * min(t, 4) / 4) for t in range(6)]
    assert lrs == pytest.approx(expected, rel=1e-12) and lrs[-1] == pytest.approx(0.19509, abs=1e-5)


def test_half_cosine_holds_at_zero_after_the_run():
    """Unlike CosineAnnealingLR, which climbs again past T_max, the prior stops moving."""
    optim, param = PriorAdam((2, 2), total_steps=3, schedule="half_cosine"), torch.zeros(2, 2)
    for _ in range(3):
        optim.step(param, torch.ones(2, 2))
    after_run = param.clone()
    optim.step(param, torch.ones(2, 2))
    assert optim.current_lr() == 0.0 and torch.equal(param, after_run)


def test_state_dict_resume_continues_exactly():
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(2, 4, generator=g) for _ in range(6)]
    straight, param = PriorAdam((2, 4), total_steps=6), torch.zeros(2, 4)
    for grad in grads:
        straight.step(param, grad)
    first, resumed_param = PriorAdam((2, 4), total_steps=6), torch.zeros(2, 4)
    for grad in grads[:3]:
        first.step(resumed_param, grad)
    second = PriorAdam((2, 4), total_steps=6)
    second.load_state_dict(first.state_dict())
    assert second.steps_taken == 3
    for grad in grads[3:]:
        second.step(resumed_param, grad)
    assert torch.equal(resumed_param, param)


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="learning rate"):
        PriorAdam((2, 2), lr=0)
    with pytest.raises(ValueError, match="total_steps"):
        PriorAdam((2, 2), total_steps=0)
    with pytest.raises(ValueError, match="schedule"):
        PriorAdam((2, 2), schedule="cosine")


def _reference_adarand_mu(mu0, batches, alpha, lr, total_steps, betas=(0.9, 0.999), eps=1e-8):
    """mu after AdaRand's prior updates, float64: EMA (Eq. 14-15), gradient of Eq. 11-13 by
    autograd on the loop reference, and Adam written from its equations
    (m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; mu -= lr_t (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps))
    with the official schedule lr_t = lr max(0, cos(pi 7/16 (t-1)/T))."""
    mu, running = mu0.clone(), mu0.clone()
    m, v = torch.zeros_like(mu), torch.zeros_like(mu)
    for t, (features, labels) in enumerate(batches, start=1):
        running = ref_ema(running, features, labels, alpha)
        leaf = mu.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(ref_prior_loss(leaf, running), leaf)
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        mu = mu - lr * _official_factor(t - 1, total_steps) * m_hat / (v_hat.sqrt() + eps)
    return mu


def test_adarand_prior_mu_follows_float64_adam_with_the_official_schedule():
    num_classes, dim, total_steps = 4, 6, 5
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    stats = ClassStats(mean=mean, std=torch.rand(num_classes, dim, generator=g, dtype=torch.float64) + 0.1,
                       count=torch.full((num_classes,), 3), global_mean=mean.mean(0), global_std=torch.ones(dim))
    batches = [(torch.randn(8, dim, generator=g, dtype=torch.float64), torch.randint(0, num_classes, (8,), generator=g))
               for _ in range(total_steps)]
    reg = build_regularizer("adarand", num_classes, dim, alpha=0.5, prior_lr=1e-2, total_steps=total_steps).double()
    reg.init_from_stats(stats)
    for features, labels in batches:
        reg.step(features, labels)
    expected = _reference_adarand_mu(mean, batches, alpha=0.5, lr=1e-2, total_steps=total_steps)
    assert not torch.allclose(expected, mean)  # the prior moved
    torch.testing.assert_close(reg.prior.mu, expected, rtol=1e-10, atol=1e-12)


def test_the_adaptive_prior_adapts_itself_as_adarand_steps_it():
    """``AdaptivePrior.adapt`` alone, with no regularizer, follows the same float64 reference, and
    ``AdaRand.step`` is that call: the two end bit-identical."""
    num_classes, dim, total_steps = 4, 6, 5
    g = torch.Generator().manual_seed(4)
    mean = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    std = torch.rand(num_classes, dim, generator=g, dtype=torch.float64) + 0.1
    batches = [(torch.randn(8, dim, generator=g, dtype=torch.float64), torch.randint(0, num_classes, (8,), generator=g))
               for _ in range(total_steps)]
    prior = AdaptivePrior(num_classes, dim, alpha=0.5, lr=1e-2, total_steps=total_steps).double()
    prior.init_from_stats(mean, std)
    reg = build_regularizer("adarand", num_classes, dim, alpha=0.5, prior_lr=1e-2, total_steps=total_steps).double()
    reg.prior.init_from_stats(mean, std)
    for features, labels in batches:
        torch.testing.assert_close(prior.adapt(features, labels), reg.step(features, labels), rtol=0, atol=0)
    expected = _reference_adarand_mu(mean, batches, alpha=0.5, lr=1e-2, total_steps=total_steps)
    torch.testing.assert_close(prior.mu, expected, rtol=1e-10, atol=1e-12)
    for key, value in prior.state_dict().items():
        assert torch.equal(reg.prior.state_dict()[key], value), key
    assert int(prior.optimizer.num_steps) == total_steps and int(prior.skipped_batches) == 0


def test_the_adaptive_prior_checks_its_inputs_and_its_terms():
    prior = AdaptivePrior(3, 4, use_dist=False)
    with pytest.raises(RuntimeError, match="not initialised"):
        prior.adapt(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64))
    prior.init_from_stats(torch.randn(3, 4), torch.ones(3, 4))
    with pytest.raises(ValueError, match="4"):
        prior.adapt(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="use_mean / use_dist"):
        AdaptivePrior(3, 4, use_mean=False, use_dist=False)
    no_mean = AdaptivePrior(3, 4, use_mean=False, check_values=False).init_from_stats(torch.randn(3, 4), torch.ones(3, 4))
    start = no_mean.running_mean.clone()
    no_mean.adapt(torch.full((2, 4), float("nan")), torch.zeros(2, dtype=torch.int64))
    assert torch.equal(no_mean.running_mean, start) and int(no_mean.skipped_batches) == 0  # features never reach it
    assert not torch.equal(no_mean.mu, start)  # L_dist alone moved the means
