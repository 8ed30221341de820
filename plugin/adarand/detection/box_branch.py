"""The regularizer on one Detectron2 box branch: which sampled ROIs it regularizes, under which label.

The ROI heads (:mod:`adarand.detection.roi_heads`) hand a :class:`BoxRegularization` the
box-head features of the ROIs a training step sampled, labelled by :meth:`~BoxRegularization.roi_labels`,
and add what :meth:`~BoxRegularization.loss` returns to their losses:

    loss_adarand = lambda * mean_{i,d} (f_id - r_id)^2,  r_i ~ N(mu_{y_i}, sigma_{y_i}^2)

over the regularized ROIs (or the chosen method's term). It keeps nothing between calls but its noise
stream (:class:`~adarand.detection.branch.Branch`).
:func:`build_box_regularizations` builds one per regularized stage from the ``MODEL.ADARAND`` keys; the
ROI heads' ``from_config`` calls it and the head owns them (``roi_heads.adarand[<stage>]``), so the
model's checkpoints hold their state while Detectron2's own state-dict keys stay as they are.
"""
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from detectron2.layers import cat
from torch import nn

from adarand import IGNORE_INDEX, build_regularizer_from_config

from .branch import Branch, check_prior_initialised

LABELS = ("roi", "image")
CASCADE_STAGES = ("all", "last")
NORMALIZERS = ("regularized", "sampled")


class BoxRegularization(Branch):
    """A regularizer on one box predictor's input features, with the ROI labelling rule.

    Args:
        regularizer: an ``adarand.Regularizer`` over NUM_CLASSES (+1 with background) classes.
        num_classes: the detector's foreground classes K (background is index K).
        labels: ``"roi"``: each sampled ROI is labelled with its matched class, foreground
            ROIs only (and background ROIs as class K with ``regularize_background``).
            ``"image"``: every sampled ROI, foreground or background, is labelled with its
            image's single category (multi-category images are an error).
        regularize_background: see ``labels``; only with ``"roi"``.
        normalizer: ``"sampled"`` (default): ``loss * n_regularized / n_sampled``, i.e. their
            sum over all sampled ROIs, as Detectron2 normalises ``loss_box_reg`` (no host
            sync; docs/detection_stability.md); ``"regularized"``: the regularizer's mean over
            the regularized ROIs.
        stage: index of the box head feeding this predictor (cascade stage; 0 otherwise).
        name: suffix of the logged scalars (``""``, or ``"stage2"``).
        seed: the run's seed, for the noise stream (:class:`~adarand.detection.branch.Branch`).
    """

    ROWS = "rois"  # what one row is, in the logged names (adarand/num_rois)

    def __init__(self, regularizer: nn.Module, num_classes: int, labels: str = "roi", regularize_background: bool = False,
                 stage: int = 0, name: str = "", normalizer: str = "sampled", seed: int | None = None):
        super().__init__(regularizer, name, seed)
        if labels not in LABELS:
            raise ValueError(f"MODEL.ADARAND.LABELS must be one of {LABELS}; got {labels!r}")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"MODEL.ADARAND.NORMALIZER must be one of {NORMALIZERS}; got {normalizer!r}")
        if labels == "image" and regularize_background:
            raise ValueError("MODEL.ADARAND.LABELS 'image' labels background ROIs with the image's category: "
                             "it cannot be combined with MODEL.ADARAND.REGULARIZE_BACKGROUND True")
        expected = num_classes + int(regularize_background)
        if regularizer.num_classes != expected:
            raise ValueError(f"the regularizer has {regularizer.num_classes} classes, expected {expected}")
        self.num_classes, self.labels, self.regularize_background = num_classes, labels, regularize_background
        self.stage, self.normalizer = stage, normalizer

    def extra_repr(self) -> str:
        return (f"labels={self.labels}, regularize_background={self.regularize_background}, stage={self.stage}, "
                f"normalizer={self.normalizer}")

    # -- labels -------------------------------------------------------------------------
    def roi_labels(self, proposals: list, targets: list | None = None,
                   categories: torch.Tensor | None = None) -> torch.Tensor:
        """Label of every sampled ROI (IGNORE_INDEX = not regularized), in the order of ``proposals``.

        Args:
            proposals: the sampled ROIs per image (``Instances`` with ``gt_classes``).
            targets: the images' ground truth (``Instances`` with ``gt_classes``); needed with
                ``"image"`` labels only, unless ``categories`` is given.
            categories: :func:`image_categories` of ``targets`` when the caller has them already
                (the ROI heads compute them once per forward, for every stage).

        Returns:
            a LongTensor with one label per ROI.
        """
        if self.labels == "image":
            if categories is None and targets is not None:
                categories = image_categories(targets)
            if categories is None or len(categories) != len(proposals):
                raise RuntimeError("LABELS 'image': the ROI heads did not pass the images' ground truth")
            return cat([first.expand(len(p)) for first, p in zip(categories, proposals)])
        classes = cat([p.gt_classes for p in proposals])
        limit = self.num_classes + int(self.regularize_background)
        return torch.where(classes < limit, classes, torch.full_like(classes, IGNORE_INDEX))

    # -- loss -----------------------------------------------------------------------------
    def check_initialised(self, resumed_from: str | None = None) -> None:
        """Raise the error saying how to initialise the prior (``resumed_from``: the checkpoint a resume loaded)."""
        check_prior_initialised(self.regularizer, "the box predictor" + (f" of {self.name}" if self.name else ""),
                                resumed_from)

    def loss(self, features: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None = None,
             classifier_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``loss_adarand`` of the ROIs' box-head features under their labels.

        Rows labelled IGNORE_INDEX are not regularized but stay in place (selecting them with a
        boolean mask would sync the device with the host every step).

        Args:
            features: N x D box-head features of the sampled ROIs.
            labels: their N labels (:meth:`roi_labels`).
            logits, classifier_weight: the box predictor's class scores (N x K+1) and
                classifier weight, for the methods that use them (PtR).

        Returns:
            a scalar tensor (0 when no row is regularized).

        Raises:
            RuntimeError: the prior needs statistics and was never initialised (saying how).
        """
        self.check_initialised()
        self.noise_generator(features.device)
        loss = self.regularizer(features, labels, logits=logits, classifier_weight=classifier_weight)
        if self.normalizer == "sampled":
            loss = loss * (labels != IGNORE_INDEX).sum() / max(labels.numel(), 1)
        return loss


def image_categories(targets: list) -> torch.Tensor:
    """Each training image's category (``"image"`` labels): its first GT class.

    Multi-category images fail a device-side assertion (no host sync); the trainers check the
    data first with :class:`~adarand.detection.mapper.SingleCategoryMapper`, whose error names the file.

    Args:
        targets: the images' ground truth (``Instances`` with ``gt_classes``).

    Returns:
        one 1-element tensor per image (IGNORE_INDEX for an image without boxes).
    """
    firsts = []
    for t in targets:
        classes = t.gt_classes
        torch._assert_async((classes == classes[:1]).all(),
                            "MODEL.ADARAND.LABELS 'image' needs single-category images; a training image "
                            "has ground-truth boxes of several classes")
        filler = torch.full((1,), IGNORE_INDEX, dtype=classes.dtype, device=classes.device)
        firsts.append(torch.cat([classes[:1], filler])[:1])
    return firsts


def flat_dim(shape: Any) -> int:
    """Length of a box-head output (a ShapeSpec) once flattened."""
    return int(math.prod(s for s in (shape.channels, shape.height, shape.width) if s))


def build_box_regularizations(adarand: Mapping[str, Any], num_classes: int, box_heads: Sequence[nn.Module],
                              prior_total_steps: int | None = None,
                              noise_seed: int | None = None) -> dict[int, BoxRegularization]:
    """The regularizations of an ROI head's box branch, ``{stage: BoxRegularization}``, from the ``MODEL.ADARAND``
    keys: the stages ``CASCADE_STAGES`` picks among ``box_heads`` (one for ``StandardROIHeads``), each with its own
    regularizer on the flattened box-head output.

    Args:
        adarand: the ``MODEL.ADARAND`` keys (a CfgNode, or a LazyConfig's dict from ``adarand_options``).
        num_classes: the detector's foreground classes K. box_heads: the box head of each stage, in order.
        prior_total_steps: length of the prior optimizer's cosine schedule (SOLVER.MAX_ITER).
        noise_seed: the run's seed for the branches' noise streams, ``run_seed(SEED)`` (default
            ``torch.initial_seed()``).
    """
    stages = adarand["CASCADE_STAGES"]
    if stages not in CASCADE_STAGES:
        raise ValueError(f"MODEL.ADARAND.CASCADE_STAGES must be one of {CASCADE_STAGES}; got {stages!r}")
    chosen = range(len(box_heads)) if stages == "all" else [len(box_heads) - 1]
    background = bool(adarand["REGULARIZE_BACKGROUND"])
    branches = {}
    for k in chosen:
        regularizer = build_regularizer_from_config(adarand, num_classes + int(background),
                                                    flat_dim(box_heads[k].output_shape), prior_total_steps)
        branches[k] = BoxRegularization(regularizer, num_classes, adarand["LABELS"], background, stage=k,
                                        name=f"stage{k}" if len(box_heads) > 1 else "",
                                        normalizer=adarand["NORMALIZER"], seed=noise_seed)
    return branches
