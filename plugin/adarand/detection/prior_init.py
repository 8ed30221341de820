"""Prior initialisation (Eq. 9-10) from the pre-trained detector's box-head features.

For every training image (test-time resize, no flip), in eval mode and without grad:
backbone -> ``box_pooler`` on the ROIs given by ``STATS_ROIS`` -> each regularized stage's
``box_head``; the flattened features are accumulated per class with
:class:`adarand.ClassStatsAccumulator`, one accumulator per regularized box branch
(:func:`~adarand.detection.box_branch.box_regularizations`). ``STATS_ROIS "gt"``: the
ground-truth boxes with their classes; ``"proposals"``: the ROIs the sampler draws from the
pre-trained RPN's training-mode proposals, labelled as training labels them (``LABELS``).
With ``REGULARIZE_BACKGROUND`` the background class (index NUM_CLASSES) gets the features of
the background proposals the ROI sampler draws, as in training. Under torch.distributed
each rank reads its shard and the sums are all-reduced.
"""
import logging
import os

import torch
from detectron2.data import (
    DatasetFromList, DatasetMapper, MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from adarand import ClassStats, ClassStatsAccumulator

from .box_branch import SingleCategoryMapper, box_regularizations, unwrap

STATS_NAME = "adarand_stats.pt"
logger = logging.getLogger(__name__)


def build_stats_loader(cfg):
    """Training images with their annotations, resized as at test time, one per batch."""
    return stats_loader(cfg.DATASETS.TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT,
                        cfg.MODEL.ADARAND.STATS_MAX_IMAGES, cfg.MODEL.ADARAND.LABELS)


def stats_loader(dataset_names, min_size, max_size, image_format="BGR", max_images=0, labels="roi"):
    """The statistics loader from explicit arguments (LazyConfigs call this one).

    ``labels="image"``: an image with several categories is an error naming it.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    dicts = get_detection_dataset_dicts(names, filter_empty=True)
    if max_images > 0:
        dicts = dicts[:max_images]
    mapper = DatasetMapper(is_train=True, augmentations=[T.ResizeShortestEdge(min_size, max_size)],
                           image_format=image_format, use_instance_mask=False, recompute_boxes=False)
    if labels == "image":
        mapper = SingleCategoryMapper(mapper)
    return build_detection_test_loader(DatasetFromList(dicts, copy=False), mapper=mapper)


def _training_proposals(model, images, features, targets):
    """The RPN's proposals as in training (training-mode top-k), without touching other modules."""
    rpn = model.proposal_generator
    mode, rpn.training = rpn.training, True
    try:
        return rpn(images, features, targets)[0]
    finally:
        rpn.training = mode


@torch.no_grad()
def _update(accumulators, model, heads, batch, rois):
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    targets = [x["instances"].to(model.device) for x in batch]
    needed = rois == "proposals" or any(reg.regularize_background for reg in heads.box_regularizations())
    proposals = _training_proposals(model, images, features, targets) if needed else None
    for acc, (f, y) in zip(accumulators, heads.statistics_rows(features, proposals, targets, rois)):
        acc.update(f, y)  # rows labelled IGNORE_INDEX are not counted


def collect_box_head_stats(model, loader, rois="gt", allow_missing=False, extractor="", meta=None, class_names=()):
    """``ClassStats`` of each regularized box branch's features over ``loader`` (list, stage order)."""
    model = unwrap(model)
    regs = box_regularizations(model)
    heads = getattr(model, "roi_heads", None)
    if not regs or not hasattr(heads, "statistics_rows"):
        raise ValueError("the model has no AdaRand ROI heads (set MODEL.ROI_HEADS.NAME: AdaRandROIHeads or "
                         "AdaRandCascadeROIHeads)")
    accumulators = [ClassStatsAccumulator(reg.regularizer.num_classes) for reg in regs]
    was_training = model.training
    model.eval()
    try:
        with EventStorage():
            for batch in loader:
                _update(accumulators, model, heads, batch, rois)
    finally:
        model.train(was_training)
    meta = {**(meta or {}), "stats_rois": rois, "labels": regs[0].labels}
    out = []
    for reg, acc in zip(regs, accumulators):
        try:
            out.append(acc.finalize(extractor=f"{extractor} box head {reg.stage}".strip(), meta=meta,
                                    allow_missing=allow_missing))
        except ValueError:
            if acc.counts is None:
                raise
            names = list(class_names) + ["background"]
            missing = [names[i] if i < len(names) else str(i) for i in (acc.counts == 0).nonzero().flatten().tolist()]
            raise ValueError(f"no {'ground-truth box' if rois == 'gt' else 'sampled ROI'} of class(es) {missing} "
                             f"in {meta.get('datasets', 'the training set')}: every class needs at least one to "
                             "initialise the prior (fix ROI_HEADS.NUM_CLASSES or the data, or set "
                             "MODEL.ADARAND.ALLOW_MISSING_CLASSES True)") from None
    return out


def compute_box_head_stats(cfg, model, loader=None):
    """``ClassStats`` of each regularized box branch on ``cfg.DATASETS.TRAIN`` (list, stage order)."""
    a = cfg.MODEL.ADARAND
    return collect_box_head_stats(
        model, loader if loader is not None else build_stats_loader(cfg), rois=a.STATS_ROIS,
        allow_missing=a.ALLOW_MISSING_CLASSES, extractor=f"{cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.WEIGHTS or 'random init'})",
        meta={"datasets": list(cfg.DATASETS.TRAIN)},
        class_names=MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []))


def stats_path(cfg):
    """STATS_FILE, or the cache OUTPUT_DIR/adarand_stats.pt when it is empty."""
    return cfg.MODEL.ADARAND.STATS_FILE or os.path.join(cfg.OUTPUT_DIR, STATS_NAME)


def branch_path(path, reg):
    """The statistics file of one box branch: ``path`` itself, or ``<stem>_stage<k><ext>`` in a cascade."""
    if not reg.name:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{reg.name}{ext}"


def init_prior(cfg, model):
    """Initialise the priors of a model that needs statistics; compute and cache them if absent.

    Returns the statistics used (one per regularized box branch), or None when the method needs none.
    """
    return init_prior_from(model, stats_path(cfg), required=bool(cfg.MODEL.ADARAND.STATS_FILE),
                           compute=lambda: compute_box_head_stats(cfg, model))


def init_prior_from(model, path, required, compute):
    """Load each branch's statistics from ``path`` (see :func:`branch_path`), or ``compute()`` and save them.

    ``required``: a missing file is an error (a user-given STATS_FILE) instead of a cache miss.
    """
    regs = box_regularizations(model)
    if not any(reg.regularizer.needs_stats for reg in regs):
        return None
    paths = [branch_path(path, reg) for reg in regs]
    if all(os.path.isfile(p) for p in paths):
        logger.info("AdaRand prior: statistics from %s", ", ".join(paths))
        stats = [ClassStats.load(p, num_classes=reg.regularizer.num_classes, feat_dim=reg.regularizer.feat_dim)
                 for p, reg in zip(paths, regs)]
    elif required:
        raise FileNotFoundError(f"MODEL.ADARAND.STATS_FILE not found: {[p for p in paths if not os.path.isfile(p)]}")
    else:
        logger.info("AdaRand prior: computing box-head statistics")
        stats = compute()
        if comm.is_main_process():
            for p, st in zip(paths, stats):
                st.save(p)
            logger.info("AdaRand prior: statistics cached in %s", ", ".join(paths))
        comm.synchronize()
    for reg, st in zip(regs, stats):
        reg.regularizer.init_from_stats(st)
    return stats
