"""Fine-tuning baselines that need no source data (L2-SP, DELTA, BSS), behind one interface.

The interface mirrors the core's regularizers (:func:`adarand.build_regularizer`): a baseline
is built by name with checked keyword options, ``build_baseline(name, model, **options)``
(:func:`available_baselines`, :func:`baseline_options`), and called after the model's forward
pass as ``loss = baseline(features, labels, logits=None, classifier_weight=None)``, which
returns the term added to the loss. Two additions, because a baseline looks inside the model:

- ``with baseline.watch(images): features, logits = model.forward_features(images)``: the
  forward pass whose intermediate outputs the baseline reads (DELTA). Forward hooks exist only
  inside this block; the outputs are handed to the next call of the baseline and dropped there.
- ``baseline.needs_data`` / ``baseline.init_from_data(fit_batches, probe_batches)``: one-off
  initialisation from training data before training (DELTA's channel attention), like the
  regularizers' ``needs_stats`` / ``init_from_stats``.

Methods:

- L2-SP (Li et al., ICML 2018): ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_head||^2``, w_S the
  backbone's parameters, w_S^0 their values when the baseline is built (the pre-trained
  weights), held by the baseline alone.
- DELTA (Li et al., ICLR 2019), as DELTA's own code (``lixingjian/DELTA`` ``train.py``) computes it:
  ``alpha * 0.5 * sum_i sum_j sum_c W_jc ||FM_jc(w, x_i) - FM_jc(w^0, x_i)||^2 / (H_j W_j)
  + beta/2 ||w_head||^2``, FM_jc channel c of the output of backbone layer j (H_j x W_j
  positions), w^0 a frozen copy of the starting backbone in eval mode, W_jc the channel
  attention (:func:`attention_weights`), the layers :func:`delta_layers` by default.
- BSS (Chen et al., NeurIPS 2019): ``eta * sum_{i<=k} s_{-i}^2``, the k smallest singular values
  of the batch feature matrix (B x D).
"""
import contextlib
import copy
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from adarand.ops.common import accumulation_dtype
from adarand.registry import Registry
from adarand.validation import check_hyperparameter

# DELTA's own code standardises the loss increases and divides them by 5 before the softmax.
OFFICIAL_ATTENTION_TEMPERATURE = 5.0
# Normalisations of DELTA's feature-map distance: "delta" (DELTA's code), "mean" (our earlier default).
DELTA_SCALES = ("delta", "mean")
# BatchNorm statistics the attention is measured with: "target" (DELTA's code: its probe head trains with the
# network in train mode, so the running statistics follow the target data), "pretrained" (our earlier default).
DELTA_BN_STATS = ("target", "pretrained")
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # (images, labels) batches


def head_l2(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``||w_head||^2`` over the given head parameters (weight and bias)."""
    return sum(p.pow(2).sum() for p in params)


class Baseline(nn.Module):
    """Base class: the hooks of the interface, all no-ops."""

    needs_data = False

    def watch(self, images: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Context manager around the model's forward pass on ``images`` (nothing to watch here)."""
        return contextlib.nullcontext()

    def init_from_data(self, fit_batches: Batches, probe_batches: Batches) -> None:
        """One-off initialisation from ``(images, labels)`` batches (nothing for this method)."""


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


def _channel_distance(live, ref, weights=None, scale="delta"):
    """``sum_c W_c ||live_ic - ref_ic||^2`` over a batch (channels on dim 1, the other P = H x W positions
    flattened; W = 1 when ``weights`` is None): ``0.5 * sum_i (.) / P`` (scale "delta", DELTA's code) or
    ``mean_i (.)`` (scale "mean")."""
    diff = (live.to(accumulation_dtype(live.dtype)) - ref.to(accumulation_dtype(ref.dtype))).pow(2)
    diff = diff.reshape(diff.shape[0], diff.shape[1], -1)  # B x C x P
    per_channel = diff.sum(2)  # B x C
    if weights is not None:
        per_channel = per_channel * weights
    if scale == "delta":
        return 0.5 * per_channel.sum() / diff.shape[2]
    return per_channel.sum(1).mean()


@contextlib.contextmanager
def _capture(modules):
    """Forward hooks on ``{name: module}`` for the duration of the block; outputs land in the yielded dict."""
    outputs = {}

    def hook(name):
        def record(module, inputs, output):
            outputs[name] = output
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _resolve_layers(backbone, layers):
    """``{name: submodule}`` of ``backbone`` ("" is the backbone itself: the penultimate features)."""
    modules = dict(backbone.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"delta: backbone has no submodule(s) {missing} (BASELINE.DELTA_LAYERS)")
    return {name: modules[name] for name in layers}


def delta_layers(backbone: nn.Module) -> list[str]:
    """DELTA's layers for ``backbone``: the output of the last convolution of the last block of each
    ResNet stage, before its BatchNorm (``layer1.2.conv3`` ... ``layer4.2.conv3`` on a ResNet-50, as
    DELTA's code hooks them; ``conv2`` of basic blocks); the penultimate features ``[""]`` for other
    backbones (DELTA defines no layers for them: name them in BASELINE.DELTA_LAYERS)."""
    layers = []
    for k in range(1, 5):
        stage = getattr(backbone, f"layer{k}", None)
        if not isinstance(stage, nn.Sequential) or not len(stage):
            return [""]
        last = len(stage) - 1
        conv = "conv3" if hasattr(stage[last], "conv3") else "conv2"
        if not isinstance(getattr(stage[last], conv, None), nn.Conv2d):
            return [""]
        layers.append(f"layer{k}.{last}.{conv}")
    return layers


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
    modules = _resolve_layers(backbone, layers)
    sums: list[torch.Tensor] | None = None
    count = 0
    zeroed: dict[str, int | None] = {"channel": None}

    def zero_channel(module, inputs, output):
        output = output.clone()
        output[:, zeroed["channel"]] = 0
        return output

    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        with _capture(modules) as outputs:
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
    raise ValueError(f"delta: unknown attention {mode!r}; expected one of {DELTA.ATTENTION}")


class DELTA(Baseline):
    """``alpha * 0.5 * sum_i sum_j sum_c W_jc ||FM_jc(w, x_i) - FM_jc(w^0, x_i)||^2 / (H_j W_j)
    + beta/2 ||w_head||^2`` (scale "delta"; scale "mean": ``alpha * mean_i sum_j sum_c W_jc ||.||^2 + ...``).

    The attention W_jc is computed once, before training, by :meth:`init_from_data`: a linear head
    is fitted to the frozen starting features of ``fit_batches`` (:func:`fit_linear_head`), then
    each channel's loss increase is averaged over ``probe_batches`` (:func:`channel_loss_increase`)
    and normalised per layer (:func:`attention_weights`); by default with BatchNorm statistics
    re-estimated on ``fit_batches`` (``bn_stats``). The reference w^0 keeps the pre-trained ones.

    Args:
        model: an ``ImageClassifier``; its backbone is copied (frozen, eval mode) as w^0.
        alpha: weight of the feature-map distance.
        beta: weight of the head's L2 term.
        layers: names of backbone submodules whose outputs are compared ("" = the penultimate
            features); empty: DELTA's layers, :func:`delta_layers`.
        attention: ``supervised-standardized`` (default, DELTA's code), ``supervised`` (the DELTA
            paper's equation as written) or ``none`` (every channel weighs 1); see :func:`attention_weights`.
        scale: ``delta`` (default, DELTA's code: 0.5 x the sum over the batch, each layer over its H x W)
            or ``mean`` (the mean over the batch, no 1/(H W)).
        bn_stats: BatchNorm statistics the attention is measured with: ``target`` (default, DELTA's
            code, :func:`target_bn_statistics`) or ``pretrained`` (the starting network's).

    Shape:
        - Layer outputs: (B, C_j, ...), channels on dim 1 (B x D for the penultimate features).
        - Output: scalar.
    """

    ATTENTION = ("supervised-standardized", "supervised", "none")

    def __init__(self, model: nn.Module, alpha: float = 0.01, beta: float = 0.01, layers: Sequence[str] = (),
                 attention: str = "supervised-standardized", scale: str = "delta", bn_stats: str = "target"):
        super().__init__()
        if attention not in self.ATTENTION:
            raise ValueError(f"delta: unknown attention {attention!r}; expected one of {self.ATTENTION}")
        if scale not in DELTA_SCALES:
            raise ValueError(f"delta: unknown scale {scale!r}; expected one of {DELTA_SCALES}")
        if bn_stats not in DELTA_BN_STATS:
            raise ValueError(f"delta: unknown bn_stats {bn_stats!r}; expected one of {DELTA_BN_STATS}")
        self.alpha = check_hyperparameter("alpha", alpha)
        self.beta = check_hyperparameter("beta", beta)
        self.layers = list(layers) or delta_layers(model.backbone)
        self.attention, self.scale, self.bn_stats = attention, scale, bn_stats
        self.num_classes = model.head.out_features
        self.head_params = list(model.head.parameters())
        self.live = _resolve_layers(model.backbone, self.layers)  # a dict: not submodules of the baseline
        self.frozen = copy.deepcopy(model.backbone).eval().requires_grad_(False)
        self.reference = _resolve_layers(self.frozen, self.layers)
        for j in range(len(self.layers)):
            self.register_buffer(f"attention_{j}", None)
        # (live, reference) outputs of the last watched forward, until the next call
        self._maps: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None

    @property
    def needs_data(self) -> bool:  # type: ignore[override]  # a class attribute of the base
        return self.attention != "none"

    def train(self, mode: bool = True) -> "DELTA":
        super().train(mode)
        self.frozen.eval()  # the reference network always runs with its pre-trained BN statistics
        return self

    def init_from_data(self, fit_batches: Batches, probe_batches: Batches) -> None:
        """Compute the channel attention (see the class docstring) from ``(images, labels)`` batches."""
        if not self.needs_data:
            return
        increase = starting_loss_increase(self.frozen, self.layers, self.num_classes, fit_batches, probe_batches,
                                          self.bn_stats)
        for j, delta_loss in enumerate(increase):
            setattr(self, f"attention_{j}", attention_weights(delta_loss, self.attention).float())

    def channel_weights(self) -> list[torch.Tensor | None]:
        """Per layer: the C_j channel weights, or None (every channel weighs 1)."""
        weights = [getattr(self, f"attention_{j}") for j in range(len(self.layers))]
        if self.needs_data and any(w is None for w in weights):
            raise RuntimeError(f"delta: attention {self.attention!r} is not computed yet; call "
                               "init_from_data(fit_batches, probe_batches) before training (or use attention 'none')")
        return weights

    @contextlib.contextmanager
    def watch(self, images: torch.Tensor) -> Iterator[None]:
        """Run the frozen network on ``images``, then hook the live layers for the block's forward pass."""
        with torch.no_grad(), _capture(self.reference) as reference:
            self.frozen(images)
        with _capture(self.live) as live:
            yield
        self._maps = (live, reference)

    def forward(self, features: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                logits: torch.Tensor | None = None, classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        if self._maps is None:
            raise RuntimeError("delta: run the model's forward pass inside `with baseline.watch(images):` "
                               "before computing the loss")
        (live, reference), self._maps = self._maps, None
        missing = [name or "<backbone output>" for name in self.layers if name not in live]
        if missing:
            raise RuntimeError(f"delta: layer(s) {missing} did not run in the watched forward pass")
        weights = self.channel_weights()
        distance = sum(_channel_distance(live[name], reference[name], w, self.scale)
                       for name, w in zip(self.layers, weights))
        return self.alpha * distance + 0.5 * self.beta * head_l2(self.head_params)


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


_REGISTRY = Registry("baseline", {"l2sp": L2SP, "delta": DELTA, "bss": _bss}, leading=("model",))


def available_baselines() -> list[str]:
    """Names accepted by :func:`build_baseline`."""
    return _REGISTRY.names()


def baseline_options(name: str) -> dict[str, Any]:
    """The keyword options ``name`` accepts (beyond the model), with defaults."""
    return _REGISTRY.options(name)


def build_baseline(name: str, model: nn.Module, **options: Any) -> Baseline:
    """The baseline ``name`` for ``model`` (an ``ImageClassifier``: ``backbone``, ``head``).

    Options (see :func:`baseline_options`): ``alpha``, ``beta`` (L2-SP, DELTA), ``layers``,
    ``attention``, ``scale``, ``bn_stats`` (DELTA), ``eta``, ``k`` (BSS).
    """
    return _REGISTRY.build(name, model, **options)
