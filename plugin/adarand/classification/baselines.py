"""Fine-tuning baselines that need no source data: L2-SP, DELTA, BSS.

Each is a module called as ``baseline(images, features)`` after the model's forward
pass and returns a scalar added to the loss:

- L2-SP (Li et al., 2018): ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2``, w_S the
  parameters that came from the pre-trained model, w_S^0 their starting values.
- DELTA (Li et al., 2019), unweighted: ``alpha * mean_i sum_j ||FM_j(w, x_i) - FM_j(w^0, x_i)||^2
  + beta/2 ||w_head||^2``, FM_j the outputs of the chosen backbone layers (default: the
  penultimate features), w^0 a frozen copy of the starting network in eval mode. The
  paper's attention weights per channel are not used (every channel weighs 1).
- BSS (Chen et al., 2019): ``eta * sum_{i<=k} s_{-i}^2``, the k smallest singular values
  of the batch feature matrix (B x D).
"""
import copy

import torch
from torch import nn


def _at_least_fp32(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def head_l2(head: nn.Module) -> torch.Tensor:
    """``||w_head||^2`` over every parameter of the new head (weight and bias)."""
    return sum(p.pow(2).sum() for p in head.parameters())


class L2SP(nn.Module):
    """``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2``."""

    def __init__(self, model, alpha=0.01, beta=0.01):
        super().__init__()
        self.alpha, self.beta, self.head = alpha, beta, model.head
        start = model.pretrained_parameters()
        params = dict(model.named_parameters())
        missing = sorted(set(start) - set(params))
        if missing:
            raise KeyError(f"l2sp: pre-trained parameter(s) {missing[:5]} are not parameters of the model")
        self.params = [params[name] for name in start]
        for i, name in enumerate(start):
            self.register_buffer(f"start_{i}", start[name].detach().clone().to(params[name].dtype))
        self.names = list(start)

    def forward(self, images=None, features=None):
        starts = [getattr(self, f"start_{i}") for i in range(len(self.params))]
        drift = sum((p - p0).pow(2).sum() for p, p0 in zip(self.params, starts))
        return 0.5 * self.alpha * drift + 0.5 * self.beta * head_l2(self.head)


class DELTA(nn.Module):
    """Plain feature-map distance to the frozen starting network, plus the head's L2."""

    def __init__(self, model, alpha=0.01, beta=0.01, layers=()):
        super().__init__()
        self.alpha, self.beta, self.head, self.layers = alpha, beta, model.head, list(layers)
        self.frozen = copy.deepcopy(model).eval().requires_grad_(False)
        self._live, self._ref = {}, {}
        live_modules = dict(model.backbone.named_modules())
        ref_modules = dict(self.frozen.backbone.named_modules())
        for name in self.layers:
            if name not in live_modules:
                raise KeyError(f"delta: backbone has no submodule {name!r} (BASELINE.DELTA_LAYERS)")
            live_modules[name].register_forward_hook(self._store(self._live, name))
            ref_modules[name].register_forward_hook(self._store(self._ref, name))

    @staticmethod
    def _store(bucket, name):
        def hook(module, inputs, output):
            bucket[name] = output
        return hook

    def train(self, mode=True):
        super().train(mode)
        self.frozen.eval()  # the reference network always runs with its pre-trained BN statistics
        return self

    def forward(self, images, features):
        with torch.no_grad():
            ref_features = self.frozen.features(images)
        if self.layers:
            pairs = [(self._live.pop(n), self._ref.pop(n)) for n in self.layers]
        else:
            pairs = [(features, ref_features)]
        distance = sum((_at_least_fp32(a) - _at_least_fp32(b)).pow(2).flatten(1).sum(1).mean() for a, b in pairs)
        return self.alpha * distance + 0.5 * self.beta * head_l2(self.head)


class BSS(nn.Module):
    """``eta * sum of the k smallest squared singular values`` of the batch features."""

    def __init__(self, eta=0.001, k=1):
        super().__init__()
        self.eta, self.k = eta, k

    def forward(self, images=None, features=None):
        singular = torch.linalg.svdvals(_at_least_fp32(features))  # descending
        return self.eta * singular[-self.k:].pow(2).sum()


def build_baseline(cfg, model):
    """The baseline ``cfg.BASELINE.NAME`` for ``model`` (None for "")."""
    name, b = cfg.BASELINE.NAME, cfg.BASELINE
    if name == "":
        return None
    if name == "l2sp":
        return L2SP(model, b.ALPHA, b.BETA)
    if name == "delta":
        return DELTA(model, b.ALPHA, b.BETA, b.DELTA_LAYERS)
    if name == "bss":
        return BSS(b.BSS_ETA, b.BSS_K)
    raise ValueError(f"config key BASELINE.NAME = {name!r}; expected '', l2sp, delta or bss")
