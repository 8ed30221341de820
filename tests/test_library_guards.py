"""Bad hyper-parameters and inputs are refused with an error naming them, before any state changes."""
import math

import pytest
import torch

from adarand import AdaptivePrior, ClassConditionalPrior, build_regularizer
from regularizer_cases import C, D, build

NAN, INF = math.nan, math.inf

# (regularizer, options, error type, message)
BAD_OPTIONS = [
    ("fnp", {"lam": -1.0}, ValueError, "lam must be finite and >= 0"),
    ("adarand", {"lam": NAN}, ValueError, "lam must be finite"),
    ("randreg-cp", {"lam": INF}, ValueError, "lam must be finite"),
    ("ptr", {"lam": "x"}, TypeError, "lam must be a number"),
    ("adarand", {"prior_lr": NAN}, ValueError, "prior_lr must be finite and > 0"),
    ("adarand", {"prior_lr": 0.0}, ValueError, "prior_lr must be finite and > 0"),
    ("adarand-no-dist", {"prior_lr": -1e-2}, ValueError, "prior_lr"),
    ("adarand", {"prior_lr": INF}, ValueError, "prior_lr"),
    ("adarand", {"alpha": NAN}, ValueError, "alpha must lie in"),
    ("adarand", {"alpha": 1.5}, ValueError, "alpha must lie in"),
    ("adarand", {"total_steps": 0}, ValueError, "total_steps"),
    ("ptr", {"ratio": 0.0}, ValueError, "ratio must be finite and > 0"),
    ("ptr", {"ratio": -3.0}, ValueError, "ratio"),
    ("ptr", {"ratio": NAN}, ValueError, "ratio"),
    ("ptr", {"target_scale": 0.0}, ValueError, "target_scale"),
    ("ptr", {"threshold": NAN}, ValueError, "threshold"),
    ("ptr", {"loss": "l1"}, ValueError, "unknown PtR loss"),
]


@pytest.mark.parametrize("name, options, error, message", BAD_OPTIONS)
def test_bad_hyperparameters_are_refused_at_construction(name, options, error, message):
    with pytest.raises(error, match=message):
        build_regularizer(name, num_classes=C, feat_dim=D, **options)


@pytest.mark.parametrize("num_classes, feat_dim", [(0, D), (C, 0), (-1, D)])
def test_empty_shapes_are_refused(num_classes, feat_dim):
    with pytest.raises(ValueError, match="must be positive"):
        build_regularizer("fnp", num_classes=num_classes, feat_dim=feat_dim)


# (labels, error, message): labels of a 4-row batch
BAD_LABELS = [
    (torch.tensor([0, 1, 2, 3], dtype=torch.uint8), TypeError, "at least 32 bits"),
    (torch.tensor([0, 1, 2, 3], dtype=torch.int16), TypeError, "at least 32 bits"),
    (torch.tensor([True, False, True, False]), TypeError, "at least 32 bits"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer"),
    (torch.tensor([0, 1, 2]), ValueError, "labels must have shape"),
    (torch.tensor([0, 1, 2, C]), ValueError, "IGNORE_INDEX"),
    (torch.tensor([0, 1, -1, 3]), ValueError, "IGNORE_INDEX"),
]
NAMES = ["none", "fnp", "randreg-uniform", "randreg-cp", "adarand", "ptr"]


def _snapshot(reg):
    return {k: v.clone() for k, v in reg.state_dict().items()}


def _unchanged(reg, before):
    return all(torch.equal(reg.state_dict()[k], v) for k, v in before.items())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("labels, error, message", BAD_LABELS)
def test_bad_labels_are_refused_before_any_state_change(name, labels, error, message):
    reg = build(name)
    features = torch.randn(4, D, dtype=torch.float64, requires_grad=True)
    head = torch.randn(C, D, dtype=torch.float64)
    before = _snapshot(reg)
    with pytest.raises(error, match=message):
        reg(features, labels, logits=features.detach() @ head.T, classifier_weight=head)
    with pytest.raises(error, match=message):
        reg.step(features.detach(), labels)
    assert _unchanged(reg, before)


def test_int32_labels_give_the_int64_result():
    reg = build("adarand")
    features = torch.randn(6, D, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.manual_seed(0)
    loss64 = reg(features, labels)
    torch.manual_seed(0)
    loss32 = reg(features, labels.int())
    assert torch.equal(loss64, loss32)


def test_ptr_takes_int32_labels_and_gives_the_int64_result():
    """Issue 20, item 8: PtR's CE and gradient ratio index with the labels (cross_entropy wants int64)."""
    reg = build("ptr")
    reg.enabled.fill_(True)
    features, head = torch.randn(6, D, dtype=torch.float64), torch.randn(C, D, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    results = []
    for y in (labels, labels.int()):
        torch.manual_seed(0)
        results.append(reg(features, y, logits=features @ head.T, classifier_weight=head))
    assert results[0] != 0 and torch.equal(results[0], results[1])
    assert reg.epoch_ce_count == 12


# (logits shape, weight shape, message) for PtR with C = 4, D = 6, B = 5
BAD_HEADS = [
    (None, (C, D), "needs the logits"),
    ((5, C), None, "needs the logits"),
    ((4, C), (C, D), r"logits must have shape \(5, K\)"),
    ((5, C - 1), (C - 1, D), "K >= 4"),
    ((5,), (C, D), "logits must have shape"),
    ((5, C), (C, D + 1), r"classifier_weight must have shape \(4, 6\)"),
    ((5, C + 1), (C, D), r"classifier_weight must have shape \(5, 6\)"),
    ((5, C), (D, C), "classifier_weight"),
]


@pytest.mark.parametrize("logits_shape, weight_shape, message", BAD_HEADS)
def test_ptr_head_shapes_are_checked_before_any_state_change(logits_shape, weight_shape, message):
    reg = build("ptr")
    features = torch.randn(5, D, dtype=torch.float64)
    logits = None if logits_shape is None else torch.randn(*logits_shape, dtype=torch.float64)
    weight = None if weight_shape is None else torch.randn(*weight_shape, dtype=torch.float64)
    before = _snapshot(reg)
    with pytest.raises(ValueError, match=message):
        reg(features, torch.tensor([0, 1, 2, 3, 0]), logits=logits, classifier_weight=weight)
    assert _unchanged(reg, before)


def test_ptr_accepts_a_head_with_more_logits_than_regularized_classes():
    """Detection: K = NUM_CLASSES + 1 logits (background) while the prior has NUM_CLASSES classes."""
    reg = build("ptr")
    features = torch.randn(5, D, dtype=torch.float64)
    loss = reg(features, torch.tensor([0, 1, 2, 3, 0]), logits=torch.randn(5, C + 1, dtype=torch.float64),
               classifier_weight=torch.randn(C + 1, D, dtype=torch.float64))
    assert torch.isfinite(loss)


def test_prior_refuses_bad_alpha_and_noise():
    with pytest.raises(ValueError, match="alpha"):
        AdaptivePrior(C, D, alpha=-0.1)
    with pytest.raises(ValueError, match="unknown noise"):
        ClassConditionalPrior(C, D, noise="laplace")
