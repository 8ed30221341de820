"""AdaRand on any Detectron2 ROI head: one mixin, registered for the standard and the cascade heads.

:class:`AdaRandHeadsMixin` goes before a Detectron2 ROI-heads class in the bases. After the
head is built it attaches a :class:`~adarand.detection.box_branch.BoxRegularization` to the
box predictor (``StandardROIHeads``) or to the predictors of the cascade stages chosen by
``CASCADE_STAGES`` (``CascadeROIHeads``: ``"all"`` or ``"last"``); each predictor then adds
``loss_adarand`` (``loss_adarand_stage{k}`` in a cascade) to its losses. Everything else is
Detectron2's code. Each regularizer is a submodule, so its whole state (prior, prior
optimizer) is in every model checkpoint, under ``roi_heads.box_predictor[.k].adarand``.
"""
import contextlib
import inspect
import math

import torch
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads import CascadeROIHeads
from torch import nn

from adarand import build_regularizer_from_config

from .box_branch import BoxRegularization, RegularizedPredictor, attach

CASCADE_STAGES = ("all", "last")
STATS_ROIS = ("gt", "proposals")


def flat_dim(shape):
    """Length of a box-head output (a ShapeSpec) once flattened."""
    return int(math.prod(s for s in (shape.channels, shape.height, shape.width) if s))


def _as_list(module):
    return list(module) if isinstance(module, nn.ModuleList) else [module]


class AdaRandHeadsMixin:
    """Adds the feature regularizer to the box branch of the ROI-heads class it is mixed into.

    Args (besides the head's own):
        adarand: the ``MODEL.ADARAND`` keys (a dict or CfgNode).
        prior_total_steps: length of the prior optimizer's cosine schedule (SOLVER.MAX_ITER).
    """

    @configurable
    def __init__(self, *, adarand, prior_total_steps=None, **kwargs):
        super().__init__(**kwargs)
        stages = adarand.get("CASCADE_STAGES", "last")
        if stages not in CASCADE_STAGES:
            raise ValueError(f"MODEL.ADARAND.CASCADE_STAGES must be one of {CASCADE_STAGES}; got {stages!r}")
        predictors, heads = _as_list(self.box_predictor), _as_list(self.box_head)
        chosen = range(len(predictors)) if stages == "all" else [len(predictors) - 1]
        background = bool(adarand["REGULARIZE_BACKGROUND"])
        for k in chosen:
            regularizer = build_regularizer_from_config(adarand, self.num_classes + int(background),
                                                        flat_dim(heads[k].output_shape), prior_total_steps)
            name = f"stage{k}" if len(predictors) > 1 else ""
            attach(predictors[k], BoxRegularization(regularizer, self.num_classes, adarand.get("LABELS", "roi"),
                                                    background, stage=k, name=name,
                                                    normalizer=adarand.get("NORMALIZER", "sampled")))

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["adarand"] = dict(cfg.MODEL.ADARAND)
        ret["prior_total_steps"] = cfg.SOLVER.MAX_ITER
        return ret

    def box_regularizations(self):
        """The regularizations of this head's box predictors, in stage order."""
        return [p.adarand for p in _as_list(self.box_predictor) if isinstance(p, RegularizedPredictor)]

    def forward(self, images, features, proposals, targets=None):
        if self.training:
            for reg in self.box_regularizations():
                reg.set_image_labels(targets)
        return super().forward(images, features, proposals, targets)

    @contextlib.contextmanager
    def _box_branch_training(self):
        """The training path of the box branch only (box and mask heads keep their mode)."""
        modules = [self] + _as_list(self.box_predictor)
        modes = [m.training for m in modules]
        for m in modules:
            m.training = True
        try:
            with contextlib.ExitStack() as stack:
                for reg in self.box_regularizations():
                    stack.enter_context(reg.collecting())
                yield
        finally:
            for m, mode in zip(modules, modes):
                m.training = mode

    def _sampled_rows(self, features, proposals, targets):
        """(features, labels) each regularization gets in training, from the ROI sampler's ROIs."""
        for reg in self.box_regularizations():
            reg.set_image_labels(targets)
        with self._box_branch_training():
            sampled = self.label_and_sample_proposals(proposals, targets)
            extra = [targets] if "targets" in inspect.signature(self._forward_box).parameters else []
            self._forward_box(features, sampled, *extra)  # cascade heads re-match each stage to the targets
        return [reg.pop_regularized() for reg in self.box_regularizations()]

    @torch.no_grad()
    def statistics_rows(self, features, proposals, targets, rois="gt"):
        """Box-head features and labels for the prior statistics (Eq. 9-10), per regularization.

        ``rois="gt"``: each stage's box head on the ground-truth boxes, labelled with their
        classes (plus, with REGULARIZE_BACKGROUND, the sampled background ROIs as class K).
        ``rois="proposals"``: the ROIs the sampler draws from ``proposals``, labelled as in
        training (LABELS), i.e. exactly the rows training regularizes.
        """
        if rois not in STATS_ROIS:
            raise ValueError(f"MODEL.ADARAND.STATS_ROIS must be one of {STATS_ROIS}; got {rois!r}")
        regs = self.box_regularizations()
        if rois == "proposals" or any(reg.regularize_background for reg in regs):
            sampled = self._sampled_rows(features, proposals, targets)
        if rois == "proposals":
            return sampled
        box_heads = _as_list(self.box_head)
        pooled = self.box_pooler([features[f] for f in self.box_in_features], [t.gt_boxes for t in targets])
        labels = torch.cat([t.gt_classes for t in targets])
        out = []
        for k, reg in enumerate(regs):
            f, y = box_heads[reg.stage](pooled).flatten(1), labels
            if reg.regularize_background:
                sampled_f, sampled_y = sampled[k]
                bg = sampled_y == self.num_classes
                f, y = torch.cat([f, sampled_f[bg]]), torch.cat([y, sampled_y[bg]])
            out.append((f, y))
        return out


@ROI_HEADS_REGISTRY.register()
class AdaRandROIHeads(AdaRandHeadsMixin, StandardROIHeads):
    """StandardROIHeads whose box predictor adds ``loss_adarand``."""


@ROI_HEADS_REGISTRY.register()
class AdaRandCascadeROIHeads(AdaRandHeadsMixin, CascadeROIHeads):
    """CascadeROIHeads whose stage predictors (CASCADE_STAGES) add ``loss_adarand_stage{k}``."""
