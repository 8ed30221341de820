"""Rows labelled IGNORE_INDEX stay in place and contribute nothing (torch path).

Every regularizer on a batch with ignored rows must equal the same regularizer on the
batch with those rows removed: same loss, same gradient on the kept rows (zero on the
ignored ones), same state after ``step``/``on_epoch_end``. Priors get sigma = 0 so the
references need no noise.
"""
import pytest
import torch

import adarand
from adarand import IGNORE_INDEX, build_regularizer
from adarand.ops import class_ema_, target_loss
from helpers import ref_ema, ref_regression_active
from regularizer_cases import NAMES, C, D, build

IGNORED = torch.tensor([1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0], dtype=torch.bool)


def _batch(seed=3):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(12, D, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (12,), generator=g)
    head = torch.randn(C, D, generator=g, dtype=torch.float64)
    return features, labels, head


def _deterministic(reg):
    prior = getattr(reg, "prior", None)
    if prior is not None:
        prior.sigma.zero_()
    return reg


def _run(reg, features, labels, head):
    f = features.clone().requires_grad_(True)
    logits = f.detach() @ head.T
    loss = reg(f, labels, logits=logits, classifier_weight=head)
    grad = torch.autograd.grad(loss, f, allow_unused=True)[0] if loss.requires_grad else torch.zeros_like(f)
    reg.step(features, labels)
    reg.on_epoch_end()
    return loss.detach(), grad


@pytest.mark.parametrize("name", NAMES)
def test_ignored_rows_equal_removed_rows(torch_backend, name):
    features, labels, head = _batch()
    ignored_labels = torch.where(IGNORED, torch.full_like(labels, IGNORE_INDEX), labels)
    garbage = features.clone()
    garbage[IGNORED] = float("nan")  # ignored rows may hold anything
    full, compact = _deterministic(build(name)), _deterministic(build(name))
    if name == "ptr":
        full.enabled.fill_(True)
        compact.enabled.fill_(True)
    loss, grad = _run(full, garbage, ignored_labels, head)
    loss_ref, grad_ref = _run(compact, features[~IGNORED], labels[~IGNORED], head)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(grad[IGNORED], torch.zeros_like(grad[IGNORED]))
    torch.testing.assert_close(grad[~IGNORED], grad_ref, rtol=1e-12, atol=1e-12)
    for key, value in compact.state_dict().items():
        torch.testing.assert_close(full.state_dict()[key], value, rtol=1e-12, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", ["fnp", "randreg-cp", "adarand", "ptr"])
def test_all_ignored_batch_gives_zero_loss_and_gradient(torch_backend, name):
    features, labels, head = _batch()
    reg = build(name)
    if name == "ptr":
        reg.enabled.fill_(True)
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    loss, grad = _run(reg, features, torch.full_like(labels, IGNORE_INDEX), head)
    assert loss.item() == 0.0 and not grad.any()
    if name != "adarand":  # AdaRand's L_dist still moves mu; the running means must not
        for key, value in before.items():
            if key not in ("enabled",):
                assert torch.equal(reg.state_dict()[key], value), key
    else:
        assert torch.equal(reg.prior.running_mean, before["prior.running_mean"])


def test_target_loss_matches_row_loop_reference(torch_backend):
    """Float64 reference over the active rows (labels in [0, C)), ignored and out-of-range rows dropped."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(9, 7, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(3, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, IGNORE_INDEX, 2, 1, IGNORE_INDEX, 2, 0, 1, IGNORE_INDEX])
    loss = target_loss(features, labels, mu, torch.zeros_like(mu))
    ref = ref_regression_active(features.detach(), mu[labels.clamp(min=0)], labels, 3)
    torch.testing.assert_close(loss, ref, rtol=1e-13, atol=1e-13)
    fnp = target_loss(features, labels, num_classes=3)
    torch.testing.assert_close(fnp, ref_regression_active(features.detach(), torch.zeros(9, 7), labels, 3))


def test_running_mean_skips_ignored_rows(torch_backend):
    g = torch.Generator().manual_seed(1)
    features = torch.randn(10, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, IGNORE_INDEX, 2, IGNORE_INDEX, 0, 0, IGNORE_INDEX, 2, 2])
    start = torch.randn(4, 5, generator=g, dtype=torch.float64)
    ours = start.clone()
    assert class_ema_(ours, features, labels, 0.3)
    torch.testing.assert_close(ours, ref_ema(start, features, labels, 0.3), rtol=1e-13, atol=1e-13)
    assert torch.equal(ours[[1, 3]], start[[1, 3]])  # absent classes untouched


def test_ignore_index_is_torch_cross_entropy_default():
    assert adarand.IGNORE_INDEX == torch.nn.CrossEntropyLoss().ignore_index == -100


def test_value_checks_accept_ignore_index_and_refuse_other_negatives():
    reg = build_regularizer("fnp", num_classes=C, feat_dim=D)
    reg(torch.randn(2, D), torch.tensor([IGNORE_INDEX, 1]))
    with pytest.raises(ValueError, match="IGNORE_INDEX"):
        reg(torch.randn(2, D), torch.tensor([-1, 1]))


def test_class_statistics_skip_ignored_rows():
    from adarand import ClassStatsAccumulator

    features = torch.randn(6, 3, dtype=torch.float64)
    labels = torch.tensor([0, IGNORE_INDEX, 1, 1, IGNORE_INDEX, 0])
    acc = ClassStatsAccumulator(2)
    acc.update(features, labels)
    stats = acc.finalize()
    assert stats.count.tolist() == [2, 2]
    torch.testing.assert_close(stats.mean[0], features[[0, 5]].mean(0).to(stats.mean.dtype))
