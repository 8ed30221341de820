import pytest
import torch
import torch.nn.functional as F

import adarand
from adarand import build_regularizer
from helpers import ref_ema, ref_prior_loss, ref_regression
from regularizer_cases import NAMES, B, C, D, batch, build, make_stats

def test_available_and_unknown_names():
    assert adarand.available_regularizers() == NAMES
    with pytest.raises(ValueError, match="unknown regularizer 'adarnd'; available: none, fnp, randreg-uniform"):
        build_regularizer("adarnd", num_classes=C, feat_dim=D)
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['alpha'\]"):
        build_regularizer("fnp", num_classes=C, feat_dim=D, alpha=0.3)


@pytest.mark.parametrize("name", NAMES)
def test_every_regularizer_runs_a_step_and_round_trips_its_state(name):
    reg = build(name)
    f, y, logits, head = batch()
    loss = reg(f, y, logits=logits, classifier_weight=head)
    assert loss.dim() == 0 and torch.isfinite(loss)
    reg.step(f.detach(), y)
    reg.on_epoch_end()
    fresh = build_regularizer(name, num_classes=C, feat_dim=D).double()
    fresh.load_state_dict(reg.state_dict())
    for key, value in reg.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert not [p for p in reg.parameters() if p.requires_grad]  # nothing for the model optimizer


@pytest.mark.parametrize("name", ["randreg-uniform", "randreg-normal", "randreg-pretrained", "randreg-cp", "ptr"])
def test_a_fixed_prior_state_with_the_former_running_means_loads(name):
    """RandReg's and PtR's checkpoints from when every prior held ``running_mean`` (only AdaRand's uses it) load
    strictly: the stale key is dropped, the rest is restored and the prior counts as initialised."""
    reg = build(name)
    old = {**reg.state_dict(), "prior.running_mean": reg.prior.mu.detach().clone()}
    fresh = build_regularizer(name, num_classes=C, feat_dim=D).double()
    fresh.load_state_dict(old)
    assert fresh.prior.initialized and "prior.running_mean" not in fresh.state_dict()
    for key, value in reg.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_none_is_zero():
    f, y, _, _ = batch()
    assert build("none")(f, y).item() == 0.0


def test_fnp_loss_and_gradient():
    f, y, _, _ = batch()
    loss = build("fnp", lam=0.5)(f, y)
    torch.testing.assert_close(loss, 0.5 * (f.detach() ** 2).mean())
    (grad,) = torch.autograd.grad(loss, f)
    torch.testing.assert_close(grad, 0.5 * 2 * f.detach() / (B * D))


@pytest.mark.parametrize("name,mean,std", [
    ("randreg-normal", lambda s: torch.zeros(C, D), lambda s: torch.ones(C, D)),
    ("randreg-pretrained", lambda s: s.global_mean.expand(C, D), lambda s: s.global_std.expand(C, D)),
    ("randreg-cp", lambda s: s.mean, lambda s: s.std),
    ("adarand", lambda s: s.mean, lambda s: s.std),
])
def test_gaussian_regularizers_match_reference(torch_backend, name, mean, std):
    stats = make_stats()
    reg = build(name, lam=2.0)
    f, y, _, _ = batch()
    torch.manual_seed(5)
    loss = reg(f, y)
    torch.manual_seed(5)
    eps = torch.randn(B, D, dtype=torch.float64)
    targets = mean(stats).double()[y] + std(stats).double()[y] * eps
    torch.testing.assert_close(loss, 2.0 * ref_regression(f, targets))
    (grad,) = torch.autograd.grad(loss, f)
    torch.testing.assert_close(grad, 2.0 * 2 * (f.detach() - targets) / (B * D))


def test_randreg_uniform_targets(torch_backend):
    reg = build("randreg-uniform")
    f, y, _, _ = batch()
    torch.manual_seed(2)
    loss = reg(f, y)
    torch.manual_seed(2)
    targets = torch.rand(B, D, dtype=torch.float64)  # U(0, 1)
    torch.testing.assert_close(loss, ref_regression(f, targets))


@pytest.mark.parametrize("name", ["randreg-normal", "randreg-pretrained", "randreg-cp"])
def test_fixed_priors_do_not_move(name):
    reg = build(name)
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    f, y, _, _ = batch()
    reg.step(f.detach(), y)
    assert all(torch.equal(v, before[k]) for k, v in reg.state_dict().items())


@pytest.mark.parametrize("name,use_mean,use_dist", [
    ("adarand", True, True), ("adarand-no-mean", False, True), ("adarand-no-dist", True, False),
])
def test_adarand_step_is_ema_then_one_adam_step(name, use_mean, use_dist):
    reg = build(name, alpha=0.25, prior_lr=0.05)
    mu0, rm0 = reg.prior.mu.detach().clone(), reg.prior.running_mean.clone()
    f, y, _, _ = batch(3)
    reg.step(f.detach(), y)
    rm1 = ref_ema(rm0, f.detach(), y, 0.25) if use_mean else rm0
    torch.testing.assert_close(reg.prior.running_mean, rm1)
    mu = mu0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(ref_prior_loss(mu, rm1, use_mean, use_dist), mu)
    # Adam's first step: m_hat = g, v_hat = g^2, so mu -= lr * g / (|g| + eps).
    expected = mu0 - 0.05 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(reg.prior.mu.detach(), expected)
    assert torch.equal(reg.prior.sigma, make_stats().std.double())  # sigma stays fixed


def test_adarand_prior_loss_decreases_over_steps():
    reg = build("adarand")
    f, y, _, _ = batch(4)
    losses = [reg.step(f.detach() + 3.0, y).item() for _ in range(200)]
    assert losses[-1] < 0.5 * losses[0]


def test_adarand_resume_continues_exactly():
    straight, first = build("adarand", total_steps=6), build("adarand", total_steps=6)
    batches = [batch(s) for s in range(6)]
    for f, y, _, _ in batches:
        straight.step(f.detach(), y)
    for f, y, _, _ in batches[:3]:
        first.step(f.detach(), y)
    second = build_regularizer("adarand", num_classes=C, feat_dim=D, total_steps=6).double()
    second.load_state_dict(first.state_dict())
    for f, y, _, _ in batches[3:]:
        second.step(f.detach(), y)
    for key, value in straight.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key


def ref_ptr(f, y, logits, head, targets, ratio, loss):
    """PtR from per-sample autograd gradients (no analytic shortcut)."""
    f = f.detach().double()
    ce_norms, ptr_norms, ptr_losses = [], [], []
    for i in range(f.shape[0]):
        fi = f[i].clone().requires_grad_(True)
        # logits are W f + b; b = logits - W f stays constant
        bias = logits[i].double() - head.double() @ f[i]
        ce = F.cross_entropy((head.double() @ fi + bias)[None], y[i:i + 1])
        ce_norms.append(torch.autograd.grad(ce, fi)[0].norm())
        diff = fi - targets[i].double()
        li = F.smooth_l1_loss(diff, torch.zeros_like(diff)) if loss == "smooth_l1" else (diff ** 2).mean()
        ptr_norms.append(torch.autograd.grad(li, fi)[0].norm())
        ptr_losses.append(li.detach())
    weight = torch.stack(ce_norms).mean() / (torch.stack(ptr_norms).mean() * ratio)
    return weight * torch.stack(ptr_losses).mean()


@pytest.mark.parametrize("loss", ["smooth_l1", "l2"])
def test_ptr_weight_and_loss_match_reference(torch_backend, loss):
    reg = build("ptr", loss=loss, ratio=3.0, target_scale=1.0, threshold=1.0)
    reg.enabled.fill_(True)
    f, y, logits, head = batch(7)
    torch.manual_seed(9)
    got = reg(f, y, logits=logits, classifier_weight=head)
    torch.manual_seed(9)
    targets = 2.0 * torch.rand(B, D, dtype=torch.float64)  # U[0, 2m), m = 1
    torch.testing.assert_close(got, ref_ptr(f, y, logits, head, targets, 3.0, loss))


def test_ptr_switches_on_below_threshold_and_stays_on():
    reg = build("ptr", threshold=1.0)
    f, y, _, head = batch()
    confident = 20.0 * F.one_hot(y, C).double()  # CE ~ 0
    confused = torch.zeros(B, C, dtype=torch.float64)  # CE = log 4 > 1
    assert reg(f, y, logits=confused, classifier_weight=head).item() == 0.0
    reg.on_epoch_end()
    assert not reg.enabled
    assert reg(f, y, logits=confident, classifier_weight=head).item() == 0.0  # off until the epoch ends
    reg.on_epoch_end()
    assert reg.enabled and reg(f, y, logits=confident, classifier_weight=head).item() > 0
    reg(f, y, logits=confused, classifier_weight=head)
    reg.on_epoch_end()
    assert reg.enabled
    with pytest.raises(ValueError, match="logits and the classifier weight"):
        reg(f, y)


@pytest.mark.parametrize("name", ["fnp", "randreg-cp", "adarand", "ptr"])
def test_bad_input_is_named_and_state_unchanged(name):
    reg = build(name)
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    f, y, logits, head = batch()
    with pytest.raises(ValueError, match="feature-dimension mismatch"):
        reg(torch.randn(B, D + 2, dtype=torch.float64), y, logits=logits, classifier_weight=head)
    with pytest.raises(ValueError, match="labels must lie"):
        reg(f, torch.full((B,), C), logits=logits, classifier_weight=head)
    nan = f.detach().clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN/Inf"):
        reg(nan, y, logits=logits, classifier_weight=head)
    if name == "adarand":
        with pytest.raises(ValueError, match="NaN/Inf"):
            reg.step(nan, y)
    assert all(torch.equal(v, before[k]) for k, v in reg.state_dict().items())


def test_regularizer_without_stats_refuses_to_run():
    reg = build_regularizer("adarand", num_classes=C, feat_dim=D)
    assert reg.needs_stats
    with pytest.raises(RuntimeError, match="not initialised"):
        reg(torch.randn(2, D), torch.tensor([0, 1]))
