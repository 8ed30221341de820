import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adarand import (ce_feature_grad_norm, conditional_entropy, feature_diagnostics, feature_norm, gaussian_entropy,
                     mutual_information)
from helpers import ref_gaussian_entropy


def test_feature_norm():
    f = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert feature_norm(f).item() == pytest.approx(3.0)


def test_entropy_matches_numpy_covariance():
    z = torch.randn(200, 4, dtype=torch.float64) @ torch.randn(4, 4, dtype=torch.float64)
    assert gaussian_entropy(z).item() == pytest.approx(ref_gaussian_entropy(z), rel=1e-10)


def test_entropy_of_scaled_features_shifts_by_d_log_scale():
    """H(aZ) = H(Z) + D log a: the estimate must follow the scaling law of differential entropy."""
    z = torch.randn(100, 3, dtype=torch.float64)
    assert (gaussian_entropy(2 * z) - gaussian_entropy(z)).item() == pytest.approx(3 * math.log(2), rel=1e-10)


def test_entropy_is_finite_when_fewer_samples_than_dims():
    assert torch.isfinite(gaussian_entropy(torch.randn(5, 20)))


def test_mutual_information_matches_reference_and_grows_with_class_separation():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    noise = torch.randn(300, 2, generator=g, dtype=torch.float64)
    centers = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    close, far = noise + centers[labels], noise + 10 * centers[labels]
    h_cond = sum(ref_gaussian_entropy(far[labels == c]) / 3 for c in range(3))
    assert mutual_information(far, labels, 3).item() == pytest.approx(ref_gaussian_entropy(far) - h_cond, rel=1e-10)
    assert conditional_entropy(far, labels, 3).item() == pytest.approx(h_cond, rel=1e-10)
    assert mutual_information(far, labels, 3) > mutual_information(close, labels, 3) > 0


def test_ce_gradient_norm_matches_autograd():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0])
    logits = f @ weight.T + bias
    per_sample = F.cross_entropy(logits, labels, reduction="sum")  # d(sum_i l_i)/d f_i = d l_i / d f_i
    (grad,) = torch.autograd.grad(per_sample, f)
    torch.testing.assert_close(ce_feature_grad_norm(logits, labels, weight), grad.norm(dim=1))


def test_feature_diagnostics_returns_floats():
    f, y = torch.randn(40, 3), torch.arange(40) % 2
    out = feature_diagnostics(f, y, 2, logits=torch.randn(40, 2), classifier_weight=torch.randn(2, 3))
    assert set(out) == {"feature_norm", "feature_entropy", "mutual_information", "ce_grad_norm"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())
