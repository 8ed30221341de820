"""``AdaRandROIHeads``: StandardROIHeads plus the feature regularizer on ROI box-head features.

In training, the box-head features ``f_i`` of the sampled proposals whose matched class
``y_i`` is foreground (and background, class index NUM_CLASSES, when
``MODEL.ADARAND.REGULARIZE_BACKGROUND``) give ``loss_adarand = lambda * mean_{i,d}
(f_id - r_id)^2`` with ``r_i ~ N(mu_{y_i}, sigma_{y_i}^2)`` (or the chosen method's term).
The regularized rows are kept, detached, for :class:`AdaRandPriorHook`, which steps the
prior after the optimizer step. The regularizer is a submodule, so its whole state
(prior, prior optimizer) is in every model checkpoint.
"""
import math

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage

from adarand import build_regularizer

from .config import regularizer_kwargs


NORMALIZERS = ("sampled", "regularized")


def per_sampled_roi(loss, keep):
    """Rescale a mean over the kept rows to a sum over them divided by all sampled ROIs.

    ``loss * n_kept / n_sampled``: each regularized ROI then weighs ``1 / n_sampled`` in the
    loss, as in Detectron2's ``loss_cls`` and ``loss_box_reg``, however few are kept
    (a mean over the kept rows gives each of them ``1 / n_kept``). No host sync.
    """
    return loss * keep.sum() / max(keep.numel(), 1)


def flat_dim(shape):
    """Length of a box-head output (a ShapeSpec) once flattened."""
    return int(math.prod(s for s in (shape.channels, shape.height, shape.width) if s))


@ROI_HEADS_REGISTRY.register()
class AdaRandROIHeads(StandardROIHeads):
    """StandardROIHeads whose box branch adds ``loss_adarand`` in training."""

    @configurable
    def __init__(self, *, regularizer, regularize_background=False, normalizer="sampled", **kwargs):
        """``regularizer``: an ``adarand.Regularizer`` over NUM_CLASSES (+1 with background) classes.

        ``normalizer``: ``"sampled"`` divides the regularizer's sum over the regularized ROIs by
        all sampled ROIs (:func:`per_sampled_roi`); ``"regularized"`` keeps its mean over them.
        """
        super().__init__(**kwargs)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"unknown MODEL.ADARAND.NORMALIZER {normalizer!r}; choose one of {NORMALIZERS}")
        self.normalizer = normalizer
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
        ret["normalizer"] = cfg.MODEL.ADARAND.NORMALIZER
        return ret

    def pop_regularized(self):
        """(features, labels) regularized in the last training forward (detached), then forget them."""
        kept, self._kept = self._kept, None
        return kept

    def regularization_loss(self, box_features, class_logits, proposals):
        """``loss_adarand`` over the sampled ROIs of the regularized classes."""
        labels = cat([p.gt_classes for p in proposals], dim=0)
        keep = labels <= self.num_classes if self.regularize_background else labels < self.num_classes
        features = box_features.flatten(1)[keep]
        labels = labels[keep]
        loss = self.regularizer(features, labels, logits=class_logits[keep],
                                classifier_weight=self.box_predictor.cls_score.weight)
        if self.normalizer == "sampled":
            loss = per_sampled_roi(loss, keep)
        self._kept = (features.detach(), labels.detach())
        storage = get_event_storage()
        storage.put_scalar("adarand/num_rois", labels.numel())
        if labels.numel():
            storage.put_scalar("adarand/feature_norm", features.detach().norm(dim=1).mean())
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
