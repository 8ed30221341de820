"""BSS (Chen et al., NeurIPS 2019): ``eta * sum_{i<=k} s_{-i}^2``, the k smallest singular values
of the batch feature matrix (B x D)."""
import torch

from adarand.ops.common import accumulation_dtype
from adarand.checks import check_hyperparameter

from .base import Baseline


class BSS(Baseline):
    """``eta * sum of the k smallest squared singular values`` of the batch features.

    Shape:
        - features: (B, D); Output: scalar.
    """

    def __init__(self, eta: float = 0.001, k: int = 1):
        super().__init__()
        self.eta = check_hyperparameter("eta", eta)
        if int(k) != k or k < 1:
            raise ValueError(f"bss: k must be a positive integer; got {k!r}")
        self.k = int(k)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        singular = torch.linalg.svdvals(features.to(accumulation_dtype(features.dtype)))  # descending
        return self.eta * singular[-self.k:].pow(2).sum()


def _bss(model, eta=0.001, k=1):
    return BSS(eta, k)
