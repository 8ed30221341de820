"""DELTA (Li et al., ICLR 2019), as DELTA's own code (``lixingjian/DELTA`` ``train.py``) computes it:
``alpha * 0.5 * sum_i sum_j sum_c W_jc ||FM_jc(w, x_i) - FM_jc(w^0, x_i)||^2 / (H_j W_j)
+ beta/2 ||w_head||^2``, FM_jc channel c of the output of backbone layer j (H_j x W_j
positions), w^0 a frozen copy of the starting backbone in eval mode, W_jc the channel
attention (:mod:`.delta_attention`), the layers :func:`~.layers.delta_layers` by default."""
import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from adarand.ops.common import accumulation_dtype
from adarand.checks import check_hyperparameter

from .base import Baseline, Batches, head_l2
from .delta_attention import ATTENTIONS, DELTA_BN_STATS, attention_weights, starting_loss_increase
from .layers import capture_outputs, delta_layers, resolve_layers

# Normalisations of DELTA's feature-map distance: "delta" (DELTA's code), "mean" (our earlier default).
DELTA_SCALES = ("delta", "mean")


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

    ATTENTION = ATTENTIONS

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
        self.live = resolve_layers(model.backbone, self.layers)  # a dict: not submodules of the baseline
        self.frozen = copy.deepcopy(model.backbone).eval().requires_grad_(False)
        self.reference = resolve_layers(self.frozen, self.layers)
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
        with torch.no_grad(), capture_outputs(self.reference) as reference:
            self.frozen(images)
        with capture_outputs(self.live) as live:
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
