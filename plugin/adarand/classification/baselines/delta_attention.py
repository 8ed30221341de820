"""DELTA's channel attention, computed once before training from the starting network: a linear head
fitted to its frozen features (:func:`fit_linear_head`), each channel's loss increase when it is zeroed
(:func:`channel_loss_increase`, :func:`starting_loss_increase`, with BatchNorm statistics of the target
data: :func:`target_bn_statistics`), normalised per layer (:func:`attention_weights`)."""
import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from adarand.ops.common import accumulation_dtype

from .base import Batches
from .layers import capture_outputs, resolve_layers

# The attention modes (:func:`attention_weights`), DELTA's code's first.
ATTENTIONS = ("supervised-standardized", "supervised", "none")
# DELTA's own code standardises the loss increases and divides them by 5 before the softmax.
OFFICIAL_ATTENTION_TEMPERATURE = 5.0
# BatchNorm statistics the attention is measured with: "target" (DELTA's code: its probe head trains with the
# network in train mode, so the running statistics follow the target data), "pretrained" (our earlier default).
DELTA_BN_STATS = ("target", "pretrained")


def fit_linear_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float = 1e-4,
                    max_iter: int = 200) -> nn.Linear:
    """A new linear head on fixed features: argmin over (W, b) of ``CE(f W^T + b, y) + wd/2 ||W||^2``
    (L-BFGS from zero, deterministic).

    Args:
        features: N x D float tensor.
        labels: N class indices in [0, num_classes).

    Returns:
        ``nn.Linear(D, num_classes)`` on the features' device and dtype, without gradient.
    """
    head = nn.Linear(features.shape[1], num_classes).to(features.device, features.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=max_iter, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(head(features), labels) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return head.requires_grad_(False)


@torch.no_grad()
def channel_loss_increase(backbone: nn.Module, head: nn.Module, layers: Sequence[str], batches: Batches,
                          device: torch.device | str | None = None) -> list[torch.Tensor]:
    """``dL_jc = mean_i [CE(head(f^{-jc}(x_i)), y_i) - CE(head(f(x_i)), y_i)]`` for every channel c of
    every layer j: the increase of the classification loss when channel c of layer j's output is
    set to zero (for a bias-free convolution: when its c-th filter is removed).

    Args:
        backbone: the starting network (images -> B x D), run as it is (put it in eval mode).
        head: a classifier on its features (B x D -> B x C).
        layers: names of ``backbone`` submodules ("" = the backbone's own output); channels on dim 1.
        batches: iterable of ``(images, labels)``.

    Returns:
        A list with one float64 tensor of shape (C_j,) per layer.
    """
    modules = resolve_layers(backbone, layers)
    sums: list[torch.Tensor] | None = None
    count = 0
    zeroed: dict[str, int | None] = {"channel": None}

    def zero_channel(module, inputs, output):
        output = output.clone()
        output[:, zeroed["channel"]] = 0
        return output

    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with capture_outputs(modules) as outputs:
            base = F.cross_entropy(head(backbone(images)).double(), labels, reduction="sum")
        if sums is None:
            sums = [torch.zeros(outputs[name].shape[1], dtype=torch.float64, device=images.device)
                    for name in layers]
        for j, name in enumerate(layers):
            handle = modules[name].register_forward_hook(zero_channel)
            try:
                for c in range(sums[j].shape[0]):
                    zeroed["channel"] = c
                    sums[j][c] += F.cross_entropy(head(backbone(images)).double(), labels, reduction="sum") - base
            finally:
                handle.remove()
        count += labels.shape[0]
    if not count:
        raise ValueError("delta: no images to compute the channel attention from")
    return [s / count for s in sums]  # type: ignore[union-attr]  # count > 0: the first batch set sums


def target_bn_statistics(backbone: nn.Module, batches: Batches) -> nn.Module:
    """A copy of ``backbone`` in eval mode whose BatchNorm running statistics are re-estimated on
    ``batches`` of ``(images, labels)``: reset, then the average over the batches of their batch
    statistics (train-mode forward passes without gradient; batches of one image are skipped).
    Parameters are unchanged; without BatchNorm the copy computes what ``backbone`` does.

    Raises:
        ValueError: the network has BatchNorm and no batch holds two images or more.
    """
    network = copy.deepcopy(backbone)
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    device, used = next(network.parameters()).device, 0
    with torch.no_grad():
        network.train()
        for images, _ in batches:
            if norms and images.shape[0] > 1:
                network(images.to(device))
                used += 1
    if norms and not used:
        raise ValueError("delta: no batch of two images or more to estimate the BatchNorm statistics of the "
                         "target data from (BASELINE.DELTA_ATTENTION_BN target; TEST.BATCH_SIZE)")
    return network.eval()


def starting_loss_increase(backbone: nn.Module, layers: Sequence[str], num_classes: int, fit_batches: Batches,
                           probe_batches: Batches, bn_stats: str = "target") -> list[torch.Tensor]:
    """The loss increases DELTA's attention is made of: a linear head fitted to the frozen starting
    features of ``fit_batches`` (:func:`fit_linear_head`), then :func:`channel_loss_increase` over
    ``probe_batches``. ``bn_stats`` "target" (DELTA's code) first re-estimates the BatchNorm running
    statistics on ``fit_batches`` (:func:`target_bn_statistics`, on a copy); "pretrained" keeps the
    backbone's. Returns one float64 tensor (C_j,) per layer."""
    if bn_stats not in DELTA_BN_STATS:
        raise ValueError(f"delta: unknown bn_stats {bn_stats!r}; expected one of {DELTA_BN_STATS}")
    if bn_stats == "target":
        backbone = target_bn_statistics(backbone, fit_batches)
    device = next(backbone.parameters()).device
    features, labels = [], []
    with torch.no_grad():
        for images, y in fit_batches:
            output = backbone(images.to(device))
            features.append(output.to(accumulation_dtype(output.dtype)))
            labels.append(y.to(device))
    head = fit_linear_head(torch.cat(features), torch.cat(labels), num_classes)
    return channel_loss_increase(backbone, head, layers, probe_batches, device)


def attention_weights(loss_increase: torch.Tensor, mode: str = "supervised-standardized") -> torch.Tensor:
    """Channel attention of one layer from its loss increases dL (shape C), scaled to mean 1.

    - ``supervised-standardized`` (DELTA's code, ``lixingjian/DELTA`` ``train.py``; the default):
      ``W_c = C * softmax_c(z_c / 5)``, ``z = (dL - mean(dL)) / std(dL)`` (population std).
    - ``supervised`` (the DELTA paper's equation as written): ``W_c = C * softmax_c(dL)``; raw
      increases are mostly small (1e-4..1e-2 on a real network), where these weights stay within a
      fraction of a percent of 1.
    - ``none``: ``W_c = 1`` (DELTA without attention).

    The factor C (as in DELTA's code, which multiplies its softmax by the channel count) makes
    uniform attention equal to ``none``, so that ``alpha`` keeps its scale across modes.
    """
    channels = loss_increase.shape[0]
    if mode == "none":
        return torch.ones_like(loss_increase)
    if mode == "supervised":
        return channels * torch.softmax(loss_increase, dim=0)
    if mode == "supervised-standardized":
        z = (loss_increase - loss_increase.mean()) / loss_increase.std(unbiased=False).clamp(min=1e-12)
        return channels * torch.softmax(z / OFFICIAL_ATTENTION_TEMPERATURE, dim=0)
    raise ValueError(f"delta: unknown attention {mode!r}; expected one of {ATTENTIONS}")
