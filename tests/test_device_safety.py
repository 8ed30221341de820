"""With value checks off (the CUDA default) bad values never corrupt memory or the prior.

Out-of-range labels are masked like IGNORE_INDEX rows and counted on the device;
``check_device_errors`` (called by the trainers on their log period) raises. A batch with
non-finite features leaves the running means, mu and the Adam moments untouched and is
counted in ``skipped_batches``. Both backends (the fused kernels under Triton's interpreter).
"""
import pytest
import torch

from adarand import IGNORE_INDEX, build_regularizer
from regularizer_cases import C, D, build_exact

NAMES = ["fnp", "randreg-normal", "randreg-cp", "adarand", "ptr"]


def _reg(name):
    """``name`` with value checks off (the CUDA default), float64, without noise, PtR's term on."""
    return build_exact(name, check_values=False)


def _run(reg, features, labels, head):
    f = features.clone().requires_grad_(True)
    loss = reg(f, labels, logits=f.detach() @ head.T, classifier_weight=head)
    grad = torch.autograd.grad(loss, f)[0] if loss.requires_grad else torch.zeros_like(f)
    reg.step(features, labels)
    return loss.detach(), grad


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_labels_are_masked_counted_and_raised_at_the_check(backend, name):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(8, D, generator=g, dtype=torch.float64)
    head = torch.randn(C, D, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, C + 1000, 2, -3, 3, 1, C])
    ignored = torch.where((labels < 0) | (labels >= C), torch.full_like(labels, IGNORE_INDEX), labels)
    bad, ref = _reg(name), _reg(name)
    loss, grad = _run(bad, features, labels, head)  # no error at the call: nothing is read back
    loss_ref, grad_ref = _run(ref, features, ignored, head)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-9)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(bad.state_dict()[key], value, rtol=1e-6, atol=1e-9, msg=key)
    assert int(bad.bad_labels) == 3  # 3 bad rows, counted once (at the forward, not again at the step: issue 20)
    with pytest.raises(ValueError, match=r"3 label value\(s\) outside \[0, 4\)"):
        bad.check_device_errors()
    assert ref.check_device_errors()["bad_labels"] == 0


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_batch_does_not_move_the_prior(backend, bad_value):
    reg = _reg("adarand")
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    reg.step(torch.randn(6, D, generator=g, dtype=torch.float64), labels)  # moments become nonzero
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    features = torch.randn(6, D, generator=g, dtype=torch.float64)
    features[2, 3] = bad_value
    reg.step(features, labels)
    for key in ("prior.mu", "prior.running_mean", "prior.optimizer.exp_avg", "prior.optimizer.exp_avg_sq"):
        assert torch.equal(reg.state_dict()[key], before[key]), key
    assert reg.check_device_errors() == {"bad_labels": 0, "skipped_batches": 1}
    features[2, 3] = 0.0  # the next finite batch moves the prior again
    reg.step(features, labels)
    assert not torch.equal(reg.prior.mu, before["prior.mu"]) and torch.isfinite(reg.prior.mu).all()
    assert int(reg.prior.skipped_batches) == 1


def test_non_finite_ignored_rows_do_not_skip_the_batch(backend):
    reg = _reg("adarand")
    features = torch.randn(4, D, dtype=torch.float64)
    features[1] = float("nan")
    start = reg.prior.running_mean.clone()
    reg.step(features, torch.tensor([0, IGNORE_INDEX, 2, 3]))
    assert int(reg.prior.skipped_batches) == 0 and not torch.equal(reg.prior.running_mean, start)
    assert torch.isfinite(reg.prior.running_mean).all()


def test_counters_in_state_and_old_checkpoints_load():
    reg = _reg("adarand")
    reg.prior.skipped_batches.fill_(3)
    state = reg.state_dict()
    assert "prior.skipped_batches" in state and "bad_labels" not in state  # an error flag is not run state
    fresh = _reg("adarand")
    fresh.load_state_dict(state)
    assert int(fresh.prior.skipped_batches) == 3
    old = {k: v for k, v in state.items() if k != "prior.skipped_batches"}  # written before the counter existed
    fresh.load_state_dict(old)
    assert int(fresh.prior.skipped_batches) == 0
    ptr = _reg("ptr")
    ptr.load_state_dict(_reg("ptr").state_dict())  # strict: no missing or unexpected key


def test_detection_hook_raises_on_masked_labels_at_its_log_period():
    pytest.importorskip("detectron2")
    from unittest import mock

    from adarand.detection import AdaRandPriorHook, BoxRegularization

    reg = build_regularizer("fnp", C, D, check_values=False)
    branch = mock.Mock(spec=BoxRegularization, regularizer=reg)
    branch.name = ""
    labels = torch.tensor([0, C + 2, IGNORE_INDEX])
    reg(torch.randn(3, D), labels)  # the forward the head ran: masks and counts the bad label
    branch.ROWS = "rois"
    model = torch.nn.Module()
    model.roi_heads = torch.nn.Module()  # a regularized head (adarand.detection.regularized's protocol)
    model.roi_heads.regularizations = mock.Mock(return_value=[branch])
    model.roi_heads.take_sampled_rows = mock.Mock(side_effect=lambda: {branch: (torch.randn(3, D), labels)})
    hook = AdaRandPriorHook(log_period=2)
    hook.trainer = mock.Mock(model=model, max_iter=10, iter=0)
    hook.before_train()
    hook.after_step()  # iteration 1: nothing read back
    hook.trainer.iter = 1
    with pytest.raises(ValueError, match=r"1 label value\(s\) outside \[0, 4\)"):  # the forward's; steps don't count
        hook.after_step()


def test_checkpoints_from_before_the_prior_owned_its_optimizer_load_exactly():
    """The regularizer kept ``prior_optimizer.*`` and ``skipped_batches``; they now live in ``prior``."""
    reg = _reg("adarand")
    reg.prior.optimizer.exp_avg.normal_()
    reg.prior.optimizer.num_steps.fill_(5)
    reg.prior.skipped_batches.fill_(2)
    moved = {"prior.optimizer.": "prior_optimizer.", "prior.skipped_batches": "skipped_batches"}
    former = {}
    for key, value in reg.state_dict().items():
        new_prefix = next((p for p in moved if key.startswith(p)), None)
        former[key if new_prefix is None else moved[new_prefix] + key[len(new_prefix):]] = value
    assert "prior_optimizer.num_steps" in former and "skipped_batches" in former
    fresh = _reg("adarand")
    fresh.load_state_dict(former)  # strict: every former key is placed
    for key, value in reg.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
