"""The regularizer on a Detectron2 box branch, for any ROI head that has one.

A box predictor (``FastRCNNOutputLayers`` or a subclass) sees the box-head features in
``forward(x)`` and the sampled ROIs with their matched classes in ``losses(predictions,
proposals)``: the two things the regularizer needs, in every ROI head that uses one
(``StandardROIHeads``: one predictor; ``CascadeROIHeads``: one per stage).
:func:`attach` gives a predictor a :class:`BoxRegularization` submodule (``.adarand``)
and makes its class a subclass with :class:`RegularizedPredictor` mixed in (as
``torch.nn.utils.parametrize`` does), so the predictor's own state-dict keys stay those
of Detectron2 and its ``losses`` returns ``loss_adarand`` beside them:

    loss_adarand = lambda * mean_{i,d} (f_id - r_id)^2,  r_i ~ N(mu_{y_i}, sigma_{y_i}^2)

over the regularized ROIs (or the chosen method's term). :func:`box_regularizations` is the
one accessor the prior hook, the prior initialisation and the trainers use.
"""
import contextlib

import torch
from detectron2.layers import cat
from torch import nn

from adarand import IGNORE_INDEX

LABELS = ("roi", "image")
NORMALIZERS = ("regularized", "sampled")

UNINITIALISED = (
    "the AdaRand prior of {where} is not initialised (the loaded weights hold no prior): compute the "
    "pre-trained box-head statistics with tools/compute_prior.py and pass them as MODEL.ADARAND.STATS_FILE, "
    "train with adarand.detection.AdaRandTrainer / tools/train_net.py / tools/lazyconfig_train_net.py "
    "(they initialise it), or call adarand.detection.init_prior(cfg, model) after loading the weights"
)
RESUMED_UNINITIALISED = (
    "the AdaRand prior of {where} is not initialised: the checkpoint {path} that --resume continues holds "
    "no prior (written by a run without AdaRand?). A resumed run keeps its checkpoint's prior and reads no "
    "statistics (MODEL.ADARAND.STATS_FILE is not used); to start AdaRand from these weights, run without "
    "--resume in a new OUTPUT_DIR with MODEL.WEIGHTS {path}"
)


def unwrap(model):
    """The model inside DistributedDataParallel / DataParallel (or the model itself)."""
    return getattr(model, "module", model)


class BoxRegularization(nn.Module):
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
    """

    def __init__(self, regularizer, num_classes, labels="roi", regularize_background=False, stage=0, name="",
                 normalizer="sampled"):
        super().__init__()
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
        self.regularizer = regularizer
        self.num_classes, self.labels, self.regularize_background = num_classes, labels, regularize_background
        self.stage, self.name, self.normalizer = stage, name, normalizer
        self._kept = None
        self._image_labels = None
        self._collecting = False

    def extra_repr(self):
        return (f"labels={self.labels}, regularize_background={self.regularize_background}, stage={self.stage}, "
                f"normalizer={self.normalizer}")

    # -- labels -------------------------------------------------------------------------
    def set_image_labels(self, targets):
        """Remember each training image's category (``"image"`` labels): its first GT class.

        Multi-category images fail a device-side assertion (no host sync); the trainers
        check the data first with :class:`SingleCategoryMapper`, whose error names the file.
        """
        if self.labels != "image":
            return
        firsts = []
        for t in targets:
            classes = t.gt_classes
            torch._assert_async((classes == classes[:1]).all(),
                                "MODEL.ADARAND.LABELS 'image' needs single-category images; a training image "
                                "has ground-truth boxes of several classes")
            filler = torch.full((1,), IGNORE_INDEX, dtype=classes.dtype, device=classes.device)
            firsts.append(torch.cat([classes[:1], filler])[:1])  # an image without boxes: ignored
        self._image_labels = firsts

    def roi_labels(self, proposals):
        """Label of every sampled ROI (IGNORE_INDEX = not regularized), in the order of ``proposals``."""
        if self.labels == "image":
            if self._image_labels is None or len(self._image_labels) != len(proposals):
                raise RuntimeError("LABELS 'image': the ROI heads did not record the images' categories")
            return cat([first.expand(len(p)) for first, p in zip(self._image_labels, proposals)])
        classes = cat([p.gt_classes for p in proposals])
        limit = self.num_classes + int(self.regularize_background)
        return torch.where(classes < limit, classes, torch.full_like(classes, IGNORE_INDEX))

    # -- loss -----------------------------------------------------------------------------
    def check_initialised(self, resumed_from=None):
        """Raise the error saying how to initialise the prior (``resumed_from``: the checkpoint a resume loaded)."""
        prior = getattr(self.regularizer, "prior", None)
        if self.regularizer.needs_stats and prior is not None and not prior.initialized:
            where = "the box predictor" + (f" of {self.name}" if self.name else "")
            message = RESUMED_UNINITIALISED if resumed_from else UNINITIALISED
            raise RuntimeError(message.format(where=where, path=resumed_from))

    def loss(self, features, logits, classifier_weight, proposals):
        """``loss_adarand`` over the regularized ROIs; keeps every row (detached) for the prior step.

        Rows that are not regularized stay in place, labelled IGNORE_INDEX (selecting them
        with a boolean mask would sync the device with the host every step).
        """
        features, labels = features.flatten(1), self.roi_labels(proposals)
        self._kept = (features.detach(), labels)
        if self._collecting:
            return None
        self.check_initialised()
        loss = self.regularizer(features, labels, logits=logits, classifier_weight=classifier_weight)
        if self.normalizer == "sampled":
            loss = loss * (labels != IGNORE_INDEX).sum() / max(labels.numel(), 1)
        return loss

    def pop_regularized(self):
        """(features, labels) of every sampled ROI in the last training forward (detached), then forget them.

        Rows that are not regularized carry the label IGNORE_INDEX.
        """
        kept, self._kept = self._kept, None
        return kept

    @contextlib.contextmanager
    def collecting(self):
        """Within: ``losses`` keeps the labelled rows but computes no loss (statistics pass)."""
        self._collecting = True
        try:
            yield self
        finally:
            self._collecting = False


class RegularizedPredictor:
    """Mixed into a box predictor's class by :func:`attach`: adds ``loss_adarand`` to its losses."""

    def forward(self, x):
        if self.training:
            self._adarand_features = x
        return super().forward(x)

    def losses(self, predictions, proposals):
        losses = super().losses(predictions, proposals)
        features, self._adarand_features = self._adarand_features, None
        if features is None:
            raise RuntimeError("box predictor: losses() without a training forward() first")
        loss = self.adarand.loss(features, predictions[0], self.cls_score.weight, proposals)
        if loss is not None:
            losses["loss_adarand"] = loss
        return losses


_CLASSES = {}


def attach(predictor, regularization):
    """Give ``predictor`` the regularization (``predictor.adarand``); returns the predictor."""
    if isinstance(predictor, RegularizedPredictor):
        raise ValueError("this box predictor already has a regularizer")
    base = type(predictor)
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Regularized{base.__name__}", (RegularizedPredictor, base), {})
    predictor.__class__ = _CLASSES[base]
    predictor._adarand_features = None
    predictor.adarand = regularization
    return predictor


def box_regularizations(model):
    """Every :class:`BoxRegularization` of the model (cascade stages in order); [] when none."""
    return [m for m in unwrap(model).modules() if isinstance(m, BoxRegularization)]


def check_capable(method, model):
    """A regularizer is configured (``method`` != none) but the model has no box branch that applies it."""
    if method != "none" and not box_regularizations(model):
        heads = type(getattr(unwrap(model), "roi_heads", None)).__name__
        raise ValueError(f"MODEL.ADARAND.METHOD is {method!r} but the model's ROI heads ({heads}) apply no "
                         "regularizer: set MODEL.ROI_HEADS.NAME to AdaRandROIHeads or AdaRandCascadeROIHeads "
                         "(or a head built with adarand.detection.AdaRandHeadsMixin), or METHOD 'none'")


def check_initialised(model, resumed_from=None):
    """Raise the error saying how to initialise, for the first uninitialised prior of the model
    (``resumed_from``: the checkpoint a ``--resume`` loaded, where statistics are not read)."""
    for reg in box_regularizations(model):
        reg.check_initialised(resumed_from)


class SingleCategoryMapper:
    """Wraps a dataset mapper: an image whose annotations have several categories is an error naming it."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        categories = sorted({a["category_id"] for a in dataset_dict.get("annotations", ()) if not a.get("iscrowd", 0)})
        if len(categories) > 1:
            raise ValueError(f"MODEL.ADARAND.LABELS 'image' needs single-category images; "
                             f"{dataset_dict.get('file_name', dataset_dict.get('image_id'))} has categories "
                             f"{categories} (train on a single-category split such as voc_2012_seg_train_single, "
                             "or use LABELS 'roi')")
        return self.mapper(dataset_dict)
