"""AdaRand on Detectron2's semantic-segmentation heads: the features the final 1x1 predictor reads.

Each head is Detectron2's, split into ``dense_features`` (everything before the predictor) and the
``predictor``, with a :class:`~adarand.detection.dense_branch.DenseRegularization` built in
``from_config``, passed to ``__init__`` and owned as ``head.adarand`` (so checkpoints hold its prior), as
:class:`~adarand.detection.roi_heads.AdaRandHeadsMixin` owns its box regularizations. A training forward,
as ``SemanticSegmentor`` and ``PanopticFPN`` call it with the padded ground truth:

    forward(features, targets) -> dense_features -> F (B x D x H x W) -> predictor -> logits
      losses: Detectron2's own (``losses(logits, targets)``, unchanged), plus
      loss_adarand_sem_seg = branch.loss(F, logits, targets): the cells PixelSampling draws
    -> (None, losses); the drawn rows {branch: (F rows detached, labels)} become
       :attr:`AdaRandSemSegMixin.sampled_rows`, the record the prior hook takes after the step.

Inference is Detectron2's own. :meth:`AdaRandSemSegMixin.statistics_rows` gives the statistics pass
every labelled cell of the same features without computing any loss.
"""
from collections.abc import Mapping
from typing import Any, Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from detectron2.projects.deeplab import DeepLabV3Head, DeepLabV3PlusHead

from adarand.seeding import run_seed

from .dense_branch import DenseRegularization, PixelRows, build_dense_regularization
from .regularized import BUILT_OR_KEYS, UNTAKEN


class AdaRandSemSegMixin:
    """Adds the pixel regularizer to the semantic-segmentation head class it is mixed into.

    The class says what its predictor reads in :meth:`dense_features` and its number of features in
    :meth:`feature_channels`.

    Args (besides the head's own):
        dense_regularization: the head's :class:`DenseRegularization` (:func:`build_dense_regularization`;
            ``from_config`` builds it from ``MODEL.ADARAND``, ``MODEL.SEM_SEG_HEAD``, SOLVER.MAX_ITER and SEED).
        adarand, prior_total_steps, noise_seed: instead of ``dense_regularization``, as a LazyConfig gives them
            (``sem_seg_head.adarand`` holds the ``MODEL.ADARAND`` keys): built on the predictor's input, over its
            classes, with the head's ignore value.

    Attributes:
        sampled_rows: the record of the last training forward with gradients enabled,
            ``{self.adarand: PixelRows}`` (features detached); empty once taken (:meth:`take_sampled_rows`).
            Such a forward while a record is still untaken is an error naming the prior hook.
    """

    @configurable
    def __init__(self, *args: Any, dense_regularization: DenseRegularization | None = None,
                 adarand: Mapping[str, Any] | None = None, prior_total_steps: int | None = None,
                 noise_seed: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if dense_regularization is None:
            if adarand is None:
                raise TypeError(BUILT_OR_KEYS.format(head=type(self).__name__, built="dense_regularization"))
            dense_regularization = build_dense_regularization(
                adarand, self.predictor.out_channels, self.ignore_value, self.predictor.in_channels,
                prior_total_steps, noise_seed)
        elif adarand is not None:
            raise TypeError(BUILT_OR_KEYS.format(head=type(self).__name__, built="dense_regularization"))
        self.adarand = dense_regularization
        self.sampled_rows: Dict[DenseRegularization, PixelRows] = {}

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Dict[str, ShapeSpec]) -> dict:
        ret = super().from_config(cfg, input_shape)
        ret["dense_regularization"] = cls._build_dense_regularization(cfg)
        return ret

    @classmethod
    def _build_dense_regularization(cls, cfg: Any) -> DenseRegularization:
        """The head's :class:`DenseRegularization` under ``cfg``."""
        head = cfg.MODEL.SEM_SEG_HEAD
        return build_dense_regularization(cfg.MODEL.ADARAND, head.NUM_CLASSES, head.IGNORE_VALUE,
                                          cls.feature_channels(cfg), cfg.SOLVER.MAX_ITER, run_seed(cfg.SEED))

    @classmethod
    def feature_channels(cls, cfg: Any) -> int:
        """D, the channels of the predictor's input under ``cfg``."""
        raise NotImplementedError

    def dense_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The predictor's input (B, D, H, W) from the backbone's feature maps."""
        raise NotImplementedError

    def regularizations(self) -> list[DenseRegularization]:
        """This head's one regularization."""
        return [self.adarand]

    def take_sampled_rows(self) -> dict:
        """The record of the last training forward, ``{branch: PixelRows}`` ({} when none ran since), then forgotten."""
        rows, self.sampled_rows = self.sampled_rows, {}
        return rows

    def forward(self, features: Dict[str, torch.Tensor], targets: torch.Tensor | None = None) -> tuple:
        if not self.training:
            return super().forward(features, targets)
        step = torch.is_grad_enabled()  # PreciseBN's forwards (no_grad) neither record nor check
        if step and self.sampled_rows:
            raise RuntimeError(UNTAKEN.format(head=type(self).__name__))
        x = self.dense_features(features)
        logits = self.predictor(x)
        losses = self.losses(logits, targets)
        loss, rows = self.adarand.loss(x, logits, targets, classifier_weight=self.predictor.weight.flatten(1))
        losses[f"loss_adarand_{self.adarand.name}"] = loss
        if step:
            self.sampled_rows = {self.adarand: rows}
        return None, losses

    @torch.no_grad()
    def statistics_rows(self, features: Dict[str, torch.Tensor], targets: torch.Tensor) -> dict:
        """Every cell of the predictor's input with its label (the statistics, Eq. 9-10), ``{branch: PixelRows}``.

        Args:
            features: the backbone's feature maps. targets: (B, H', W') ground truth, padded with the ignore value.
        """
        return {self.adarand: self.adarand.cell_rows(self.dense_features(features), targets)}


@SEM_SEG_HEADS_REGISTRY.register()
class AdaRandSemSegFPNHead(AdaRandSemSegMixin, SemSegFPNHead):
    """Semantic FPN's head (Kirillov et al., Panoptic FPN): the sum of the scale heads (CONVS_DIM features) is regularized."""

    @classmethod
    def feature_channels(cls, cfg: Any) -> int:
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM

    def dense_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.scale_heads[0](features[self.in_features[0]])
        for head, name in zip(self.scale_heads[1:], self.in_features[1:]):
            x = x + head(features[name])
        return x


@SEM_SEG_HEADS_REGISTRY.register()
class AdaRandDeepLabV3PlusHead(AdaRandSemSegMixin, DeepLabV3PlusHead):
    """DeepLabV3+'s head: the last decoder stage's output (CONVS_DIM features; ASPP_CHANNELS with one input) is
    regularized."""

    @classmethod
    def feature_channels(cls, cfg: Any) -> int:
        head = cfg.MODEL.SEM_SEG_HEAD
        return head.CONVS_DIM if len(head.IN_FEATURES) > 1 else head.ASPP_CHANNELS

    def dense_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        for name in self.in_features[::-1]:  # top-down, from the ASPP to the finest level
            projected = self.decoder[name]["project_conv"](features[name])
            if self.decoder[name]["fuse_conv"] is None:
                y = projected
            else:
                y = F.interpolate(y, size=projected.size()[2:], mode="bilinear", align_corners=False)
                y = self.decoder[name]["fuse_conv"](torch.cat([projected, y], dim=1))
        return y


@SEM_SEG_HEADS_REGISTRY.register()
class AdaRandDeepLabV3Head(AdaRandSemSegMixin, DeepLabV3Head):
    """DeepLabV3's head: the ASPP output is regularized. Detectron2's head reads its cfg itself (no
    ``from_config``): ours passes it on with the regularization built from the same cfg."""

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Dict[str, ShapeSpec]) -> dict:
        return {"cfg": cfg, "input_shape": input_shape,
                "dense_regularization": cls._build_dense_regularization(cfg)}

    @classmethod
    def feature_channels(cls, cfg: Any) -> int:
        return cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM  # the predictor's input (ASPP_CHANNELS must equal it)

    def dense_features(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.aspp(features[self.in_features[0]])
