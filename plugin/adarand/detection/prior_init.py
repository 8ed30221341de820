"""Prior initialisation (Eq. 9-10) from the pre-trained detector's box-head features.

For every training image (test-time resize, no flip), in eval mode and without grad:
backbone -> ``box_pooler`` on the ROIs given by ``STATS_ROIS`` -> each regularized stage's
``box_head``; the flattened features are accumulated per class with
:class:`adarand.ClassStatsAccumulator`, one accumulator per regularized box branch
(:func:`~adarand.detection.roi_heads.box_regularizations`). ``STATS_ROIS "gt"``: the
ground-truth boxes with their classes; ``"proposals"``: the ROIs the sampler draws from the
pre-trained RPN's training-mode proposals, labelled as training labels them (``LABELS``).
With ``REGULARIZE_BACKGROUND`` the background class (index NUM_CLASSES) gets the features of
the background proposals the ROI sampler draws, as in training. Under torch.distributed
each rank reads its shard and the sums are all-reduced.
"""
import functools
import os

import torch
from detectron2.data import (
    DatasetFromList, MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from adarand import ClassStatsAccumulator
from adarand.run_config import flatten
from adarand.stats_cache import load_or_compute_stats, stamp_identity, state_dict_digest

from .box_branch import SingleCategoryMapper, unwrap
from .mapper import NamedErrorsMapper
from .roi_heads import adarand_heads, box_regularizations

STATS_NAME = "adarand_stats.pt"


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
    mapper = NamedErrorsMapper(is_train=True, augmentations=[T.ResizeShortestEdge(min_size, max_size)],
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
    needed = heads.statistics_need_proposals(rois)
    proposals = _training_proposals(model, images, features, targets) if needed else None
    for acc, (f, y) in zip(accumulators, heads.statistics_rows(features, proposals, targets, rois)):
        acc.update(f, y)  # rows labelled IGNORE_INDEX are not counted


def collect_box_head_stats(model, loader, rois="gt", allow_missing=False, extractor="", meta=None, class_names=()):
    """``ClassStats`` of each regularized box branch's features over ``loader`` (list, stage order)."""
    model = unwrap(model)
    heads = adarand_heads(model)
    regs = heads.box_regularizations() if heads is not None else []
    if not regs:
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
    """``ClassStats`` of each regularized box branch on ``cfg.DATASETS.TRAIN`` (list, stage order),
    each recording its identity (:func:`branch_identity`), so a file saved from it is accepted as
    ``STATS_FILE`` by a run of the same set-up."""
    a = cfg.MODEL.ADARAND
    identity = stats_identity(cfg)
    stats = collect_box_head_stats(
        model, loader if loader is not None else build_stats_loader(cfg), rois=a.STATS_ROIS,
        allow_missing=a.ALLOW_MISSING_CLASSES, extractor=f"{cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.WEIGHTS or 'random init'})",
        meta={"datasets": list(cfg.DATASETS.TRAIN)},
        class_names=MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []))
    weights = weights_identity(model)
    return [stamp_identity(st, branch_identity(weights, identity, reg))
            for st, reg in zip(stats, box_regularizations(model))]


def stats_path(cfg):
    """STATS_FILE, or the cache OUTPUT_DIR/adarand_stats.pt when it is empty."""
    return cfg.MODEL.ADARAND.STATS_FILE or os.path.join(cfg.OUTPUT_DIR, STATS_NAME)


def branch_path(path, reg):
    """The statistics file of one box branch: ``path`` itself, or ``<stem>_stage<k><ext>`` in a cascade."""
    if not reg.name:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{reg.name}{ext}"


def stats_identity(cfg):
    """What the box-head statistics depend on besides the weights (a plain dict: add a key for any new setting)."""
    a = cfg.MODEL.ADARAND
    return {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME,
        "roi_heads": cfg.MODEL.ROI_HEADS.NAME, "box_head": cfg.MODEL.ROI_BOX_HEAD.NAME, "weights": cfg.MODEL.WEIGHTS,
        "datasets": list(cfg.DATASETS.TRAIN),
        "dataset_dirs": [os.path.abspath(str(MetadataCatalog.get(d).get("dirname", ""))) for d in cfg.DATASETS.TRAIN],
        "max_images": a.STATS_MAX_IMAGES, "stats_rois": a.STATS_ROIS, "labels": a.LABELS,
        "regularize_background": a.REGULARIZE_BACKGROUND,
        "transform": f"ResizeShortestEdge({cfg.INPUT.MIN_SIZE_TEST}, {cfg.INPUT.MAX_SIZE_TEST}) {cfg.INPUT.FORMAT} "
                     f"mean={list(cfg.MODEL.PIXEL_MEAN)} std={list(cfg.MODEL.PIXEL_STD)}",
        **roi_sampler_identity(cfg),
    }


def roi_sampler_identity(cfg):
    """What decides which ROIs are sampled and how they are labelled, when the statistics are taken on
    proposals (``STATS_ROIS proposals``, or the background regularized): the ROI heads' matcher
    (IoU thresholds and labels), sampling (batch size per image, positive fraction, ground truth
    appended), the cascade's IoUs, and the proposal generator (RPN and anchors). Empty otherwise."""
    a = cfg.MODEL.ADARAND
    if a.STATS_ROIS != "proposals" and not a.REGULARIZE_BACKGROUND:
        return {}
    m = cfg.MODEL
    matching = ("IOU_THRESHOLDS", "IOU_LABELS", "BATCH_SIZE_PER_IMAGE", "POSITIVE_FRACTION", "PROPOSAL_APPEND_GT",
                "NUM_CLASSES")
    return {"roi_sampler": {
        **flatten({k: m.ROI_HEADS[k] for k in matching}, "ROI_HEADS."),
        "ROI_BOX_CASCADE_HEAD.IOUS": list(m.ROI_BOX_CASCADE_HEAD.IOUS), "PROPOSAL_GENERATOR": m.PROPOSAL_GENERATOR.NAME,
        **flatten(m.RPN, "RPN."), **flatten(m.ANCHOR_GENERATOR, "ANCHOR_GENERATOR."),
    }}


def lazy_roi_sampler_identity(cfg):
    """:func:`roi_sampler_identity` of a LazyConfig: its ROI heads' matcher and sampling, and its
    proposal generator, as YAML (empty when the statistics are taken on ground-truth boxes only)."""
    from omegaconf import OmegaConf

    heads, a = cfg.model.roi_heads, cfg.model.roi_heads.adarand
    if a["STATS_ROIS"] != "proposals" and not a["REGULARIZE_BACKGROUND"]:
        return {}
    sampling = {k: heads.get(k) for k in ("batch_size_per_image", "positive_fraction", "proposal_append_gt",
                                          "num_classes")}
    return {"roi_sampler": {
        "proposal_matcher": OmegaConf.to_yaml(heads.proposal_matcher) if "proposal_matcher" in heads else None,
        **sampling,
        "proposal_generator": OmegaConf.to_yaml(cfg.model.proposal_generator)}}


def weights_identity(model):
    """The detector's weights, without the regularizers' own state (which training changes)."""
    state = {k: v for k, v in unwrap(model).state_dict().items() if ".adarand." not in k}
    return {"trainer": "detection", "weights_sha256": state_dict_digest(state)}


def branch_identity(weights, identity, reg):
    """The identity of one box branch's statistics: the ``weights`` (:func:`weights_identity`), the
    caller's settings, the branch."""
    return {**weights, **(identity or {}), "branch": reg.name or "box"}


def init_prior(cfg, model):
    """Initialise the priors of a model that needs statistics (Eq. 9-10).

    The statistics come from MODEL.ADARAND.STATS_FILE (refused unless produced by this
    model's weights and data, see :func:`stats_identity`), else from the cache
    OUTPUT_DIR/adarand_stats.pt when it has the same identity, else are computed and
    cached. Returns the statistics used (one per regularized box branch), or None when the
    method needs none.
    """
    return init_prior_from(model, stats_path(cfg), required=bool(cfg.MODEL.ADARAND.STATS_FILE),
                           compute=lambda: compute_box_head_stats(cfg, model), identity=stats_identity(cfg),
                           allow_missing=cfg.MODEL.ADARAND.ALLOW_MISSING_CLASSES)


def init_prior_from(model, path, required, compute, identity=None, allow_missing=False):
    """Load each branch's statistics from ``path`` (see :func:`branch_path`), or ``compute()`` and save them.

    ``required``: the user gave ``path``; a missing file, or one produced by other weights or
    data (``identity`` plus the weights' hash, see :mod:`adarand.stats_cache`), is an error
    instead of a cache miss. ``allow_missing`` (ALLOW_MISSING_CLASSES): False refuses a file with
    classes of no sample, as ``compute`` refuses them.
    """
    regs = box_regularizations(model)
    if not any(reg.regularizer.needs_stats for reg in regs):
        return None
    compute_all = functools.cache(compute)  # one statistics pass gives every branch's, run on the first miss
    weights = weights_identity(model)
    stats = [load_or_compute_stats(branch_path(path, reg), branch_identity(weights, identity, reg),
                                   lambda i=i: compute_all()[i], explicit=required,
                                   num_classes=reg.regularizer.num_classes, feat_dim=reg.regularizer.feat_dim,
                                   save=comm.is_main_process(), allow_missing=allow_missing)
             for i, reg in enumerate(regs)]
    comm.synchronize()
    for reg, st in zip(regs, stats):
        reg.regularizer.init_from_stats(st)
    return stats
