"""L2-SP, DELTA and BSS against float64 references written from their equations."""
import torch
from torch import nn

from adarand.classification.baselines import BSS, DELTA, L2SP


class TwoLayer(nn.Module):
    """The ImageClassifier interface on a tiny MLP (pre-trained part = backbone)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
        self.head = nn.Linear(3, 2)
        self.start = {n: p.detach().clone() for n, p in self.named_parameters() if n.startswith("backbone")}

    def features(self, x):
        return self.backbone(x)

    def pretrained_parameters(self):
        return self.start


def _perturbed_model():
    torch.manual_seed(0)
    model = TwoLayer().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_l2sp_matches_reference_value_and_grad():
    model = _perturbed_model()
    loss = L2SP(model, alpha=0.3, beta=0.7)()
    ref = 0.5 * 0.3 * sum(((p - model.start[n]) ** 2).sum() for n, p in model.named_parameters() if n in model.start)
    ref = ref + 0.5 * 0.7 * (model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum())
    torch.testing.assert_close(loss, ref)
    loss.backward()
    w = model.backbone[0].weight
    torch.testing.assert_close(w.grad, 0.3 * (w - model.start["backbone.0.weight"]))
    torch.testing.assert_close(model.head.weight.grad, 0.7 * model.head.weight)


def test_l2sp_is_zero_at_the_start_without_head_term():
    torch.manual_seed(0)
    model = TwoLayer().double()
    assert L2SP(model, alpha=1.0, beta=0.0)().item() == 0.0


def test_delta_penultimate_and_hooked_layers():
    model = _perturbed_model()
    x = torch.randn(6, 5, dtype=torch.float64)
    delta = DELTA(model, alpha=0.2, beta=0.0)  # copies the (perturbed) model as the reference
    with torch.no_grad():
        model.backbone[2].weight.add_(0.5)
    features = model.features(x)
    ref_features = delta.frozen.features(x)
    expected = 0.2 * ((features - ref_features) ** 2).sum(1).mean()
    torch.testing.assert_close(delta(x, features), expected)
    hooked = DELTA(model, alpha=0.2, beta=0.0, layers=["0", "2"])
    with torch.no_grad():
        model.backbone[0].bias.add_(0.3)
    features = model.features(x)
    live0, ref0 = model.backbone[0](x), hooked.frozen.backbone[0](x)
    expected = 0.2 * (((live0 - ref0) ** 2).sum(1).mean() + ((features - hooked.frozen.features(x)) ** 2).sum(1).mean())
    torch.testing.assert_close(hooked(x, features), expected)


def test_bss_smallest_singular_values():
    torch.manual_seed(0)
    features = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    loss = BSS(eta=0.5, k=2)(None, features)
    eig = torch.linalg.eigvalsh(features.detach().T @ features.detach())  # ascending = s^2
    torch.testing.assert_close(loss, 0.5 * eig[:2].sum())
    loss.backward()
    assert torch.isfinite(features.grad).all()
