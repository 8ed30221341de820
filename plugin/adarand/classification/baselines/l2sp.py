"""L2-SP (Li et al., ICML 2018): ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2``, w_S the
backbone's parameters, w_S^0 their values when the baseline is built (the pre-trained weights),
held by the baseline alone."""
import torch
from torch import nn

from adarand.checks import check_hyperparameter

from .base import Baseline, head_l2


class L2SP(Baseline):
    """``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2``; w_S^0 is copied from ``model.backbone`` here.

    Args:
        model: an ``ImageClassifier`` (``backbone`` and ``head``) holding its starting weights.
        alpha: weight of the distance to the starting point.
        beta: weight of the head's L2 term.

    Shape:
        - Output: scalar (the inputs of ``forward`` are not used).
    """

    def __init__(self, model: nn.Module, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha = check_hyperparameter("alpha", alpha)
        self.beta = check_hyperparameter("beta", beta)
        named = list(model.backbone.named_parameters())
        self.names = [f"backbone.{name}" for name, _ in named]  # keyed like model.named_parameters()
        self.params = [p for _, p in named]  # the live parameters (a list: not submodules of the baseline)
        self.head_params = list(model.head.parameters())
        for i, p in enumerate(self.params):
            self.register_buffer(f"start_{i}", p.detach().clone())

    def starting_point(self) -> dict[str, torch.Tensor]:
        """``{name: w^0}``, keyed like ``model.named_parameters()``."""
        return {name: getattr(self, f"start_{i}") for i, name in enumerate(self.names)}

    def forward(self, features: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                logits: torch.Tensor | None = None, classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        drift = sum((p - getattr(self, f"start_{i}")).pow(2).sum() for i, p in enumerate(self.params))
        return 0.5 * self.alpha * drift + 0.5 * self.beta * head_l2(self.head_params)
