import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adarand import (TrainingDiagnostics, ce_feature_grad_norm, ce_weight_grad_norm, conditional_entropy,
                     feature_diagnostics, feature_norm, gaussian_entropy, mean_feature_norm, mutual_information,
                     pairwise_entropy)
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
    assert set(out) == {"sample_norm", "gaussian_entropy", "gaussian_mi", "ce_feature_grad_norm"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in out.values())


def _ref_pairwise_entropy(z):
    """Eq. 4 with an explicit double loop, float64."""
    z = z.double().numpy()
    n, d = z.shape
    total = sum(math.log(np.linalg.norm(z[i] - z[j])) for i in range(n) for j in range(n) if i != j)
    return d * total / (n * (n - 1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_pairwise_entropy_matches_double_loop(dtype):
    z = (torch.randn(7, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 3).to(dtype)
    rel = 1e-12 if dtype == torch.float64 else 1e-5
    assert pairwise_entropy(z).item() == pytest.approx(_ref_pairwise_entropy(z), rel=rel)


def test_pairwise_entropy_scaling_law_and_duplicates():
    z = torch.randn(6, 3, dtype=torch.float64)
    assert (pairwise_entropy(2 * z) - pairwise_entropy(z)).item() == pytest.approx(3 * math.log(2), rel=1e-10)
    assert torch.isfinite(pairwise_entropy(torch.cat([z, z[:1]])))  # identical rows: clamped, finite
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_entropy(z[:1])


def test_mean_feature_norm_is_norm_of_the_mean():
    f = torch.tensor([[3.0, 4.0], [-3.0, 4.0]])
    assert mean_feature_norm(f).item() == pytest.approx(4.0)
    assert feature_norm(f).item() == pytest.approx(5.0)  # ours: mean of the per-sample norms


def test_ce_weight_grad_norm_matches_autograd():
    g = torch.Generator().manual_seed(5)
    f = torch.randn(6, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    logits = f @ weight.T + bias
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), weight)
    assert ce_weight_grad_norm(logits, labels, f).item() == pytest.approx(grad.norm().item(), rel=1e-12)


def test_training_diagnostics_average_per_batch_values_over_the_epoch():
    g = torch.Generator().manual_seed(6)
    batches = [(torch.randn(n, 4, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64),
                torch.randint(0, 3, (n,), generator=g)) for n in (5, 8, 1, 3)]
    diag = TrainingDiagnostics(torch.device("cpu"))
    for f, logits, y in batches:
        diag.update(f, logits, y)
    counted = [b for b in batches if b[0].shape[0] >= 2]  # a batch of one has no pairs
    out = diag.means()
    assert out["pairwise_entropy"] == pytest.approx(np.mean([_ref_pairwise_entropy(f) for f, _, _ in counted]))
    assert out["mean_feature_norm"] == pytest.approx(np.mean([np.linalg.norm(f.numpy().mean(0)) for f, _, _ in counted]))
    refs = []
    for f, logits, y in counted:
        w = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits + f @ w.T, y), w)  # d/dW at the given logits
        refs.append(grad.norm().item())
    assert out["ce_weight_grad_norm"] == pytest.approx(np.mean(refs))
