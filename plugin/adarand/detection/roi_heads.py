"""``AdaRandROIHeads``: StandardROIHeads plus the feature regularizer on ROI box-head features.

In training, the box-head features ``f_i`` of the sampled proposals whose matched class
``y_i`` is foreground (and background, class index NUM_CLASSES, when
``MODEL.ADARAND.REGULARIZE_BACKGROUND``) give ``loss_adarand = lambda * mean_{i,d}
(f_id - r_id)^2`` with ``r_i ~ N(mu_{y_i}, sigma_{y_i}^2)`` (or the chosen method's term).
The other rows are not removed (a boolean-mask selection would sync the device with the
host every step): their labels become ``adarand.IGNORE_INDEX``, which the regularizer
skips. All rows are kept, detached, for :class:`AdaRandPriorHook`, which steps the prior
after the optimizer step and logs the regularized ROIs' count and feature norm. The regularizer is a submodule, so its whole state
(prior, prior optimizer) is in every model checkpoint.
"""
import math

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes

from adarand import IGNORE_INDEX, build_regularizer

from .config import regularizer_kwargs


def flat_dim(shape):
    """Length of a box-head output (a ShapeSpec) once flattened."""
    return int(math.prod(s for s in (shape.channels, shape.height, shape.width) if s))


@ROI_HEADS_REGISTRY.register()
class AdaRandROIHeads(StandardROIHeads):
    """StandardROIHeads whose box branch adds ``loss_adarand`` in training."""

    @configurable
    def __init__(self, *, regularizer, regularize_background=False, **kwargs):
        """``regularizer``: an ``adarand.Regularizer`` over NUM_CLASSES (+1 with background) classes."""
        super().__init__(**kwargs)
        self.regularizer = regularizer
        self.regularize_background = regularize_background
        expected = self.num_classes + int(regularize_background)
        if regularizer.num_classes != expected:
            raise ValueError(f"the regularizer has {regularizer.num_classes} classes, expected {expected}")
        self._kept = None

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        background = cfg.MODEL.ADARAND.REGULARIZE_BACKGROUND
        num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES + int(background)
        feat_dim = flat_dim(ret["box_head"].output_shape)
        ret["regularizer"] = build_regularizer(cfg.MODEL.ADARAND.METHOD, num_classes, feat_dim, **regularizer_kwargs(cfg))
        ret["regularize_background"] = background
        return ret

    def pop_regularized(self):
        """(features, labels) of every sampled ROI in the last training forward (detached), then forget them.

        Rows of classes that are not regularized carry the label ``IGNORE_INDEX``.
        """
        kept, self._kept = self._kept, None
        return kept

    def regularization_loss(self, box_features, class_logits, proposals):
        """``loss_adarand`` over the sampled ROIs of the regularized classes (the others labelled IGNORE_INDEX)."""
        labels = cat([p.gt_classes for p in proposals], dim=0)
        keep = labels <= self.num_classes if self.regularize_background else labels < self.num_classes
        labels = torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))
        features = box_features.flatten(1)
        loss = self.regularizer(features, labels, logits=class_logits,
                                classifier_weight=self.box_predictor.cls_score.weight)
        self._kept = (features.detach(), labels)
        return loss

    def _forward_box(self, features, proposals):
        if not self.training:
            return super()._forward_box(features, proposals)
        box_features = self.box_pooler([features[f] for f in self.box_in_features],
                                       [x.proposal_boxes for x in proposals])
        box_features = self.box_head(box_features)
        predictions = self.box_predictor(box_features)
        losses = self.box_predictor.losses(predictions, proposals)
        losses["loss_adarand"] = self.regularization_loss(box_features, predictions[0], proposals)
        if self.train_on_pred_boxes:
            with torch.no_grad():
                pred_boxes = self.box_predictor.predict_boxes_for_gt_classes(predictions, proposals)
                for proposals_per_image, boxes in zip(proposals, pred_boxes):
                    proposals_per_image.proposal_boxes = Boxes(boxes)
        return losses
