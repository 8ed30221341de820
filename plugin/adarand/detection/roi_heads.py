"""AdaRand on Detectron2's ROI heads: the box branch hands its features to the regularizer explicitly.

:class:`AdaRandHeadsMixin` goes before a Detectron2 ROI-heads class in the bases. Its ``from_config``
builds, beside Detectron2's box head and predictor, a
:class:`~adarand.detection.box_branch.BoxRegularization` for the box predictor (``StandardROIHeads``),
or for each cascade stage chosen by ``CASCADE_STAGES`` (``CascadeROIHeads``: ``"all"`` or ``"last"``),
and passes them to ``__init__``: the head owns them as ``roi_heads.adarand[<stage>]``, so their whole
state (prior, prior optimizer, noise stream) is in every model checkpoint. A training forward, as
``CascadeROIHeads._run_stage`` passes its data:

    forward -> label_and_sample_proposals -> _forward_box(features, proposals, targets)
      _box_stages: per stage, its ROIs -> box_pooler -> box_head -> features F_k -> box_predictor
      _stage_losses: the predictor's losses, plus loss_adarand = adarand[k].loss(F_k, labels_k)
    -> (losses, rows): the losses go back to the trainer (only ``loss_*`` tensors); the rows
       {branch: (F_k detached, labels_k)} become :attr:`AdaRandHeadsMixin.sampled_rows`, the record the
       prior hook takes after the optimizer step (the protocol of :mod:`adarand.detection.regularized`).

Inference is Detectron2's own. :meth:`AdaRandHeadsMixin.statistics_rows` gives the prior's
statistics pass the same box-head features without computing any loss.
"""
import re
from collections.abc import Mapping
from typing import Any, Dict, NamedTuple

import torch
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads import CascadeROIHeads
from detectron2.structures import Boxes
from detectron2.utils.events import get_event_storage
from torch import nn

from adarand.seeding import run_seed

from .box_branch import BoxRegularization, build_box_regularizations, image_categories
from .regularized import BUILT_OR_KEYS, UNTAKEN, unwrap

STATS_ROIS = ("gt", "proposals")
# Where checkpoints written before the head owned its regularizations hold them: under the predictor
# (``box_predictor.adarand.*``; cascade ``box_predictor.<k>.adarand.*``).
_PREDICTOR_KEY = re.compile(r"box_predictor\.(?:(?P<stage>\d+)\.)?adarand\.(?P<rest>.+)")


def _as_list(module):
    return list(module) if isinstance(module, nn.ModuleList) else [module]


class BoxStage(NamedTuple):
    """One stage of the box branch in a training forward (one for ``StandardROIHeads``)."""

    index: int  # type: ignore[assignment]  # the stage's index, shadowing tuple.index by design
    predictor: nn.Module  # the stage's FastRCNNOutputLayers
    proposals: list  # its ROIs per image, labelled (``gt_classes``)
    box_features: torch.Tensor  # the box head's output on them, one row per ROI
    predictions: tuple  # the predictor's (class scores, box deltas)


class BoxRows(NamedTuple):
    """What one box regularization saw in a training forward: every sampled ROI, in place."""

    features: torch.Tensor  # N x D box-head features (detached in the record)
    labels: torch.Tensor  # N labels, IGNORE_INDEX where not regularized


def _scale(factor):
    """A tensor hook multiplying the gradient by ``factor``: what Detectron2's cascade does with its private
    ``_ScaleGradient`` (identity forward, gradient times ``factor``), through the public ``Tensor.register_hook``."""
    return lambda grad: grad * factor


def _rows(stage, branch, targets, categories):
    """(features, labels) the stage's regularization ``branch`` gets (``categories``: see ``roi_labels``)."""
    return BoxRows(stage.box_features.flatten(1), branch.roi_labels(stage.proposals, targets, categories))


class AdaRandHeadsMixin:
    """Adds the feature regularizer to the box branch of the ROI-heads class it is mixed into.

    The mixin's box branch is ``StandardROIHeads``' (pooler -> box head -> predictor); a head
    whose box branch differs says how in :meth:`_box_stages` (and assembles its losses in
    ``_forward_box``), as :class:`AdaRandCascadeROIHeads` does.

    Args (besides the head's own):
        box_regularizations: ``{stage: BoxRegularization}`` (:func:`build_box_regularizations`; ``from_config``
            builds them from ``MODEL.ADARAND``, SOLVER.MAX_ITER and SEED).
        adarand, prior_total_steps, noise_seed: instead of ``box_regularizations``, as a LazyConfig gives them
            (``roi_heads.adarand`` holds the ``MODEL.ADARAND`` keys): :func:`build_box_regularizations`'
            arguments, built with the head's own box heads.

    Attributes:
        adarand: the regularizations, an ``nn.ModuleDict`` keyed by the stage's index (``"0"`` for
            ``StandardROIHeads``). Checkpoints written when they sat in the predictors
            (``box_predictor[.k].adarand``) load into them.
        sampled_rows: the record of the last training forward with gradients enabled,
            ``{branch: BoxRows}`` for each regularization, features detached; empty once taken
            (:meth:`take_sampled_rows`) or before the first such forward. Such a forward while a
            record is still untaken is an error naming :class:`AdaRandPriorHook` (a trainer without
            it would never adapt the prior); training-mode forwards under ``torch.no_grad()``
            (PreciseBN) neither record nor check.
    """

    @configurable
    def __init__(self, *, box_regularizations: Mapping[int, BoxRegularization] | None = None,
                 adarand: Mapping[str, Any] | None = None, prior_total_steps: int | None = None,
                 noise_seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if box_regularizations is None:
            if adarand is None:
                raise TypeError(BUILT_OR_KEYS.format(head=type(self).__name__, built="box_regularizations"))
            box_regularizations = build_box_regularizations(adarand, self.num_classes, _as_list(self.box_head),
                                                            prior_total_steps, noise_seed)
        elif adarand is not None:
            raise TypeError(BUILT_OR_KEYS.format(head=type(self).__name__, built="box_regularizations"))
        self.adarand = nn.ModuleDict({str(k): branch for k, branch in sorted(box_regularizations.items())})
        self.sampled_rows: Dict[BoxRegularization, BoxRows] = {}

    @classmethod
    def from_config(cls, cfg: Any, input_shape: Any) -> dict:
        ret = super().from_config(cfg, input_shape)
        box_heads = ret["box_heads"] if "box_heads" in ret else [ret["box_head"]]  # CascadeROIHeads: one a stage
        ret["box_regularizations"] = build_box_regularizations(cfg.MODEL.ADARAND, ret["num_classes"], box_heads,
                                                               cfg.SOLVER.MAX_ITER, run_seed(cfg.SEED))
        return ret

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for key in [k for k in state_dict if k.startswith(prefix + "box_predictor.")]:  # an older checkpoint's
            match = _PREDICTOR_KEY.fullmatch(key[len(prefix):])
            if match:
                state_dict[f"{prefix}adarand.{match['stage'] or 0}.{match['rest']}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def regularizations(self) -> list[BoxRegularization]:
        """The regularizations of this head's box branch, in stage order."""
        return list(self.adarand.values())

    def _stage_branch(self, stage: int) -> BoxRegularization | None:
        """The regularization of box stage ``stage``, or None."""
        return self.adarand[str(stage)] if str(stage) in self.adarand else None

    def take_sampled_rows(self) -> dict:
        """The record of the last training forward (:attr:`sampled_rows`), which is then forgotten.

        Returns:
            ``{branch: BoxRows}`` ({} when no training forward ran since the last call).
        """
        rows, self.sampled_rows = self.sampled_rows, {}
        return rows

    # -- training ---------------------------------------------------------------------------
    def forward(self, images: Any, features: Dict[str, torch.Tensor], proposals: list,
                targets: list | None = None) -> tuple:
        if not self.training:
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("the ROI heads need the images' ground truth ('targets') in training")
        step = torch.is_grad_enabled()  # a training step; PreciseBN's forwards (no_grad) neither record nor check
        if step and self.sampled_rows:
            raise RuntimeError(UNTAKEN.format(head=type(self).__name__))
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses, rows = self._forward_box(features, proposals, targets)
        if step:
            self.sampled_rows = rows
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def _box_stages(self, features, proposals, targets, statistics=False):
        """The box branch on the sampled ROIs, as a training step runs it: a list of :class:`BoxStage`
        (``statistics``: for the statistics pass, in eval mode; the same here)."""
        box_features = self.box_head(self.box_pooler([features[f] for f in self.box_in_features],
                                                      [p.proposal_boxes for p in proposals]))
        return [BoxStage(0, self.box_predictor, proposals, box_features, self.box_predictor(box_features))]

    def _image_categories(self, targets):
        """Each image's category (``image_categories``) when the ROIs are labelled by image, else None:
        computed once per forward for every stage."""
        if any(reg.labels == "image" for reg in self.regularizations()):
            return image_categories(targets)
        return None

    def _stage_losses(self, stage, targets, categories=None):
        """The stage predictor's losses plus ``loss_adarand`` on its box features; and the rows regularized,
        ``{branch: BoxRows}`` ({} for a stage without one; ``categories``: :meth:`_image_categories` of
        ``targets``, when computed already)."""
        losses = stage.predictor.losses(stage.predictions, stage.proposals)
        branch = self._stage_branch(stage.index)
        if branch is None:
            return losses, {}
        rows = _rows(stage, branch, targets, categories)
        losses["loss_adarand"] = branch.loss(rows.features, rows.labels, logits=stage.predictions[0],
                                             classifier_weight=stage.predictor.cls_score.weight)
        return losses, {branch: BoxRows(rows.features.detach(), rows.labels)}

    def _forward_box(self, features, proposals, targets=None):
        """Training: (losses, {branch: BoxRows}); inference: Detectron2's predicted instances."""
        if not self.training:
            return super()._forward_box(features, proposals)
        (stage,) = self._box_stages(features, proposals, targets)
        losses, rows = self._stage_losses(stage, targets, self._image_categories(targets))
        # Detectron2's option: the mask head then trains on the predicted boxes. Its lines, as in
        # StandardROIHeads._forward_box, which holds them inline: calling it would run the box branch again.
        if self.train_on_pred_boxes:
            with torch.no_grad():
                boxes = self.box_predictor.predict_boxes_for_gt_classes(stage.predictions, proposals)
                for p, b in zip(proposals, boxes):
                    p.proposal_boxes = Boxes(b)
        return losses, rows

    # -- statistics (Eq. 9-10) --------------------------------------------------------------
    def statistics_need_proposals(self, rois: str) -> bool:
        """Whether :meth:`statistics_rows` with ``rois`` needs the RPN's proposals: ``"proposals"``, or a
        regularized background (whose rows are the sampled background ROIs)."""
        return rois == "proposals" or any(reg.regularize_background for reg in self.regularizations())

    @torch.no_grad()
    def statistics_rows(self, features: Dict[str, torch.Tensor], proposals: list | None, targets: list,
                        rois: str = "gt") -> dict:
        """Box-head features and labels for the prior statistics (Eq. 9-10), per regularization.

        Args:
            features: the backbone's feature maps (dict, as ``forward`` gets them).
            proposals: the RPN's training-mode proposals per image (needed unless ``rois="gt"``
                without REGULARIZE_BACKGROUND).
            targets: the images' ground truth (``Instances`` with gt_boxes, gt_classes).
            rois: ``"gt"``: each stage's box head on the ground-truth boxes, labelled with their
                classes (plus, with REGULARIZE_BACKGROUND, the sampled background ROIs as class
                K). ``"proposals"``: the ROIs the sampler draws from ``proposals``, labelled as in
                training (LABELS), i.e. exactly the rows a training step regularizes.

        Returns:
            ``{branch: BoxRows}`` for each regularization.
        """
        if rois not in STATS_ROIS:
            raise ValueError(f"MODEL.ADARAND.STATS_ROIS must be one of {STATS_ROIS}; got {rois!r}")
        if self.statistics_need_proposals(rois):
            stages = self._box_stages(features, self.label_and_sample_proposals(proposals, targets), targets,
                                      statistics=True)
            categories = self._image_categories(targets)
            sampled = {reg: _rows(stages[reg.stage], reg, targets, categories) for reg in self.regularizations()}
        if rois == "proposals":
            return sampled
        box_heads = _as_list(self.box_head)
        pooled = self.box_pooler([features[f] for f in self.box_in_features], [t.gt_boxes for t in targets])
        labels = torch.cat([t.gt_classes for t in targets])
        out = {}
        for reg in self.regularizations():
            f, y = box_heads[reg.stage](pooled).flatten(1), labels
            if reg.regularize_background:
                bg = sampled[reg].labels == self.num_classes
                f, y = torch.cat([f, sampled[reg].features[bg]]), torch.cat([y, sampled[reg].labels[bg]])
            out[reg] = BoxRows(f, y)
        return out


@ROI_HEADS_REGISTRY.register()
class AdaRandROIHeads(AdaRandHeadsMixin, StandardROIHeads):
    """StandardROIHeads whose box predictor's features are regularized (``loss_adarand``)."""


@ROI_HEADS_REGISTRY.register()
class AdaRandCascadeROIHeads(AdaRandHeadsMixin, CascadeROIHeads):
    """CascadeROIHeads whose stages (CASCADE_STAGES) are regularized (``loss_adarand_stage{k}``)."""

    def _box_stages(self, features, proposals, targets, statistics=False):
        """Each stage on the ROIs of the previous one's predicted boxes, matched to the targets at its IoU
        (``statistics``: for the statistics pass, in eval mode, where Detectron2 keeps the empty boxes)."""
        features = [features[f] for f in self.box_in_features]
        image_sizes = [p.image_size for p in proposals]
        stages = []
        for k in range(self.num_cascade_stages):
            if k > 0:
                last = stages[-1]
                proposals = self._create_proposals_from_boxes(
                    last.predictor.predict_boxes(last.predictions, last.proposals), image_sizes)
                if statistics:  # drop the empty boxes, as _create_proposals_from_boxes does in training
                    proposals = [p[p.proposal_boxes.nonempty()] for p in proposals]
                proposals = self._match_and_label_boxes(proposals, k, targets)
            pooled = self.box_pooler(features, [p.proposal_boxes for p in proposals])
            if pooled.requires_grad:  # the stages' losses add up: each stage's gradient into the features is
                pooled.register_hook(_scale(1.0 / self.num_cascade_stages))  # scaled, as Detectron2's _run_stage does
            box_features = self.box_head[k](pooled)
            stages.append(BoxStage(k, self.box_predictor[k], proposals, box_features,
                                   self.box_predictor[k](box_features)))
        return stages

    def _forward_box(self, features, proposals, targets=None):
        """Training: (losses with a ``_stage{k}`` suffix, {branch: BoxRows}); inference: Detectron2's."""
        if not self.training:
            return super()._forward_box(features, proposals)
        losses, rows = {}, {}
        storage = get_event_storage()
        categories = self._image_categories(targets)
        for stage in self._box_stages(features, proposals, targets):
            with storage.name_scope(f"stage{stage.index}"):
                stage_losses, stage_rows = self._stage_losses(stage, targets, categories)
            losses.update({f"{name}_stage{stage.index}": value for name, value in stage_losses.items()})
            rows.update(stage_rows)
        return losses, rows


def box_regularizations(model: nn.Module) -> list[BoxRegularization]:
    """Every :class:`BoxRegularization` of the model's ROI heads (cascade stages in order); [] when none."""
    heads = getattr(unwrap(model), "roi_heads", None)
    return heads.regularizations() if isinstance(heads, AdaRandHeadsMixin) else []
