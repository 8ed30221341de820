import pytest
import torch

from adarand import AdaptivePrior, ClassConditionalPrior
from helpers import ref_ema, ref_prior_loss, ref_regression

C, D, B = 4, 6, 10


def make_prior(dtype=torch.float64, alpha=None, seed=0):
    """A ClassConditionalPrior, or, ``alpha`` given (the running means' EMA factor), an AdaptivePrior."""
    g = torch.Generator().manual_seed(seed)
    prior = (ClassConditionalPrior(C, D) if alpha is None else AdaptivePrior(C, D, alpha=alpha)).to(dtype)
    prior.init_from_stats(torch.randn(C, D, generator=g, dtype=dtype), torch.rand(C, D, generator=g, dtype=dtype) + 0.1)
    return prior


def test_init_from_stats_sets_mu_sigma_and_running_mean():
    mean, std = torch.randn(C, D), torch.rand(C, D)
    prior = AdaptivePrior(C, D).init_from_stats(mean, std)
    assert torch.equal(prior.mu, mean) and torch.equal(prior.sigma, std) and torch.equal(prior.running_mean, mean)
    assert not prior.mu.requires_grad


def test_class_agnostic_inits_fill_every_row():
    mean, std = torch.randn(D), torch.rand(D)
    prior = ClassConditionalPrior(C, D).init_normal(mean, std)
    assert torch.equal(prior.mu, mean.expand(C, D)) and torch.equal(prior.sigma, std.expand(C, D))
    prior = ClassConditionalPrior(C, D).init_normal()
    assert torch.equal(prior.mu, torch.zeros(C, D)) and torch.equal(prior.sigma, torch.ones(C, D))
    uniform = ClassConditionalPrior(C, D, noise="uniform").init_uniform(0.0, 1.0)
    samples = uniform.sample(torch.arange(C).repeat(2000))
    assert samples.min() >= 0.0 and samples.max() < 1.0
    assert abs(samples.mean().item() - 0.5) < 0.01 and abs(samples.var().item() - 1 / 12) < 0.005


def test_sample_has_class_moments_and_no_grad():
    prior = make_prior(torch.float32)
    prior.mu.requires_grad_(True)  # even if a user makes mu trainable, samples stay detached
    labels = torch.arange(C).repeat_interleave(4000)
    r = prior.sample(labels)
    assert not r.requires_grad
    for c in range(C):
        rows = r[labels == c]
        torch.testing.assert_close(rows.mean(0), prior.mu[c].detach(), atol=0.05, rtol=0)
        torch.testing.assert_close(rows.std(0), prior.sigma[c], atol=0.05, rtol=0.05)


def test_sample_matches_eq8_with_seeded_noise(gen):
    prior = make_prior()
    labels = torch.tensor([0, 3, 3, 1, 2])
    r = prior.sample(labels, generator=gen)
    eps = torch.randn(5, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(r, prior.mu.detach()[labels] + prior.sigma[labels] * eps)


def test_regression_loss_matches_reference(torch_backend):
    prior = make_prior()
    f = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (B,))
    loss = prior.regression_loss(f, y, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(B, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = prior.mu.detach()[y] + prior.sigma[y] * eps
    torch.testing.assert_close(loss, ref_regression(f, targets))
    (grad,) = torch.autograd.grad(loss, f)
    torch.testing.assert_close(grad, 2 * (f.detach() - targets) / (B * D))


def test_regression_loss_with_zero_sigma_is_distance_to_class_mean():
    """Degenerate case, independent of the noise stream (any backend)."""
    prior = ClassConditionalPrior(C, D).double().init_from_stats(torch.randn(C, D, dtype=torch.float64), torch.zeros(C, D))
    f = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C, (B,))
    loss = prior.regression_loss(f, y)
    torch.testing.assert_close(loss, ref_regression(f, prior.mu.detach()[y]))
    (grad,) = torch.autograd.grad(loss, f)
    torch.testing.assert_close(grad, 2 * (f.detach() - prior.mu.detach()[y]) / (B * D))


def test_regression_loss_expectation_adds_sigma_squared():
    """E[(f - mu - sigma eps)^2] = (f - mu)^2 + sigma^2, whatever draws the noise."""
    prior = make_prior(torch.float32)
    y = torch.arange(C).repeat_interleave(5000)
    f = torch.randn(len(y), D)
    expected = ((f - prior.mu.detach()[y]) ** 2 + prior.sigma[y] ** 2).mean()
    torch.testing.assert_close(prior.regression_loss(f, y), expected, rtol=0.02, atol=0)


def test_regression_loss_of_empty_batch_is_zero():
    prior = make_prior()
    assert prior.regression_loss(torch.zeros(0, D, dtype=torch.float64), torch.zeros(0, dtype=torch.long)).item() == 0.0


@pytest.mark.parametrize("labels", [
    [0, 0, 1, 1, 1, 0, 1, 0, 1, 1],  # classes 2 and 3 absent
    [2] * 10,  # a single class fills the batch
    [0, 1, 2, 3, 0, 1, 2, 3, 0, 3],
])
def test_running_mean_ema(labels):
    prior = make_prior(alpha=0.3)
    y = torch.tensor(labels)
    f = torch.randn(len(labels), D, dtype=torch.float64)
    expected = ref_ema(prior.running_mean, f, y, 0.3)
    prior.update_running_mean(f, y)
    torch.testing.assert_close(prior.running_mean, expected)


def test_running_mean_with_more_classes_than_rows():
    prior = AdaptivePrior(50, D).double().init_normal()
    y = torch.tensor([7, 49, 7])
    f = torch.randn(3, D, dtype=torch.float64)
    expected = ref_ema(prior.running_mean, f, y, 0.5)
    prior.update_running_mean(f, y)
    torch.testing.assert_close(prior.running_mean, expected)
    untouched = torch.ones(50, dtype=torch.bool)
    untouched[[7, 49]] = False
    assert torch.equal(prior.running_mean[untouched], torch.zeros(48, D, dtype=torch.float64))


@pytest.mark.parametrize("use_mean,use_dist", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("num_classes,feat_dim", [(4, 6), (9, 3), (1, 5)])  # C <= D, C > D (D x D Gram), C = 1
def test_prior_loss_and_gradient_match_reference(use_mean, use_dist, num_classes, feat_dim):
    g = torch.Generator().manual_seed(3)
    prior = AdaptivePrior(num_classes, feat_dim).double()
    prior.init_from_stats(torch.randn(num_classes, feat_dim, generator=g, dtype=torch.float64), torch.ones(num_classes, feat_dim))
    prior.running_mean.copy_(torch.randn(num_classes, feat_dim, generator=g, dtype=torch.float64))
    mu = prior.mu.detach().clone().requires_grad_(True)
    mu_ref = prior.mu.detach().clone().requires_grad_(True)
    loss = prior.prior_loss(use_mean, use_dist, mu=mu)
    expected = ref_prior_loss(mu_ref, prior.running_mean, use_mean, use_dist)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, mu)
    (grad_ref,) = torch.autograd.grad(expected, mu_ref)
    torch.testing.assert_close(grad, grad_ref)
    assert torch.autograd.gradcheck(lambda m: prior.prior_loss(use_mean, use_dist, mu=m), (mu,))


def test_prior_loss_with_default_mu_matches_reference():
    prior = make_prior(alpha=0.5)
    prior.running_mean.add_(0.3)
    torch.testing.assert_close(prior.prior_loss(), ref_prior_loss(prior.mu.detach(), prior.running_mean))


def test_state_dict_round_trip():
    prior = make_prior(alpha=0.5)
    prior.update_running_mean(torch.randn(B, D, dtype=torch.float64), torch.randint(0, C, (B,)))
    fresh = AdaptivePrior(C, D).double()
    fresh.load_state_dict(prior.state_dict())
    assert fresh.initialized
    for name in ("mu", "sigma", "running_mean"):
        assert torch.equal(getattr(fresh, name), getattr(prior, name))
    assert {"mu", "sigma", "running_mean"} <= set(prior.state_dict())
    fixed = make_prior()  # RandReg's and PtR's prior: no running means
    assert set(fixed.state_dict()) == {"mu", "sigma"}


def test_a_fixed_priors_state_from_before_the_running_means_moved_still_loads():
    """Checkpoints written when every prior held ``running_mean`` (RandReg, PtR) load strictly: the key is dropped,
    and the prior is initialised from the state as before."""
    prior = make_prior()
    old = {**prior.state_dict(), "running_mean": prior.mu.detach().clone()}
    fresh = ClassConditionalPrior(C, D).double()
    fresh.load_state_dict(old)
    assert fresh.initialized and set(fresh.state_dict()) == {"mu", "sigma"} and "running_mean" in old
    for name in ("mu", "sigma"):
        assert torch.equal(getattr(fresh, name), getattr(prior, name))


def _snapshot(prior):
    return {k: v.clone() for k, v in prior.state_dict().items()}


@pytest.mark.parametrize("features,labels,error", [
    (torch.randn(3, D + 1), torch.tensor([0, 1, 2]), "feature-dimension mismatch"),
    (torch.randn(3, D), torch.tensor([0, 1, C]), r"labels must lie in \[0, 4\)"),
    (torch.randn(3, D), torch.tensor([0, -1, 2]), r"labels must lie in \[0, 4\)"),
    (torch.tensor([[float("nan")] * D, [0.0] * D]), torch.tensor([0, 1]), "NaN/Inf"),
    (torch.tensor([[float("inf")] * D]), torch.tensor([0]), "NaN/Inf"),
    (torch.randn(3, D), torch.tensor([0, 1]), "labels must have shape"),
    (torch.randn(2, D), torch.tensor([0.0, 1.0]), "integer"),
])
def test_bad_input_raises_and_leaves_state_unchanged(features, labels, error):
    prior = make_prior(torch.float32, alpha=0.5)
    before = _snapshot(prior)
    with pytest.raises((ValueError, TypeError), match=error):
        prior.update_running_mean(features, labels)
    with pytest.raises((ValueError, TypeError), match=error):
        prior.regression_loss(features, labels)
    for k, v in prior.state_dict().items():
        assert torch.equal(v, before[k])


def test_bad_statistics_and_uninitialised_prior():
    prior = ClassConditionalPrior(C, D)
    with pytest.raises(RuntimeError, match="not initialised"):
        prior.regression_loss(torch.randn(2, D), torch.tensor([0, 1]))
    bad = torch.randn(C, D)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="mean contains 1 NaN/Inf"):
        prior.init_from_stats(bad, torch.ones(C, D))
    with pytest.raises(ValueError, match=r"std must have shape \(4, 6\)"):
        prior.init_from_stats(torch.zeros(C, D), torch.ones(C + 1, D))
    with pytest.raises(ValueError, match="non-negative"):
        prior.init_from_stats(torch.zeros(C, D), -torch.ones(C, D))
    assert not prior.initialized and torch.equal(prior.mu, torch.zeros(C, D))
    with pytest.raises(ValueError, match="noise='uniform'"):
        prior.init_uniform()


def test_loading_a_state_without_the_priors_keys_leaves_it_uninitialised():
    prior = ClassConditionalPrior(C, D)
    missing = prior.load_state_dict({}, strict=False).missing_keys
    assert set(missing) == {"mu", "sigma"}
    assert not prior.initialized
    with pytest.raises(RuntimeError, match="not initialised"):
        prior.regression_loss(torch.randn(2, D), torch.tensor([0, 1]))
    partial = {"mu": torch.ones(C, D)}  # not a whole prior state: still uninitialised
    prior.load_state_dict(partial, strict=False)
    assert not prior.initialized
