"""Prior initialisation (Eq. 9-10) from the pre-trained detector's box-head features.

For every training image (test-time resize, no flip), in eval mode and without grad:
backbone -> ``box_pooler`` on the ground-truth boxes -> ``box_head``; the flattened
features are accumulated per GT class with :class:`adarand.ClassStatsAccumulator`.
With ``REGULARIZE_BACKGROUND`` the background class (index NUM_CLASSES) gets the
features of the background proposals the ROI sampler draws, as in training.
Under torch.distributed each rank reads its shard and the sums are all-reduced.
"""
import os

import torch
from detectron2.data import (
    DatasetFromList, MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from adarand import ClassStatsAccumulator
from adarand.stats_cache import load_or_compute_stats, state_dict_digest

from .hooks import adarand_roi_heads, unwrap
from .mapper import NamedErrorsMapper

STATS_NAME = "adarand_stats.pt"


def build_stats_loader(cfg):
    """Training images with their annotations, resized as at test time, one per batch."""
    dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=True)
    if cfg.MODEL.ADARAND.STATS_MAX_IMAGES > 0:
        dicts = dicts[: cfg.MODEL.ADARAND.STATS_MAX_IMAGES]
    mapper = NamedErrorsMapper(cfg, is_train=True, use_instance_mask=False, recompute_boxes=False,
                           augmentations=[T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)])
    return build_detection_test_loader(DatasetFromList(dicts, copy=False), mapper=mapper)


@torch.no_grad()
def _update(acc, model, heads, batch, background):
    images = model.preprocess_image(batch)
    features = model.backbone(images.tensor)
    box_inputs = [features[f] for f in heads.box_in_features]
    targets = [x["instances"].to(model.device) for x in batch]
    gt = heads.box_head(heads.box_pooler(box_inputs, [t.gt_boxes for t in targets]))
    acc.update(gt.flatten(1), torch.cat([t.gt_classes for t in targets]))
    if background:
        proposals, _ = model.proposal_generator(images, features, None)
        sampled = heads.label_and_sample_proposals(proposals, targets)
        boxes = [p.proposal_boxes[p.gt_classes == heads.num_classes] for p in sampled]
        bg = heads.box_head(heads.box_pooler(box_inputs, boxes)).flatten(1)
        acc.update(bg, torch.full((bg.shape[0],), heads.num_classes, dtype=torch.long, device=bg.device))


def stats_identity(cfg, model):
    """What the box-head statistics depend on (a plain dict: add a key for any new setting)."""
    model = unwrap(model)
    heads = adarand_roi_heads(model)
    background = bool(heads.regularize_background)
    parts = {"backbone": model.backbone, "box_pooler": heads.box_pooler, "box_head": heads.box_head}
    if background:
        parts["proposal_generator"] = model.proposal_generator
    weights = {f"{p}.{k}": v for p, m in parts.items() for k, v in m.state_dict().items()}
    return {
        "trainer": "detection", "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "backbone": cfg.MODEL.BACKBONE.NAME, "roi_heads": cfg.MODEL.ROI_HEADS.NAME,
        "box_head": cfg.MODEL.ROI_BOX_HEAD.NAME, "weights": cfg.MODEL.WEIGHTS,
        "weights_sha256": state_dict_digest(weights),
        "datasets": list(cfg.DATASETS.TRAIN),
        "dataset_dirs": [os.path.abspath(str(MetadataCatalog.get(d).get("dirname", ""))) for d in cfg.DATASETS.TRAIN],
        "max_images": cfg.MODEL.ADARAND.STATS_MAX_IMAGES,
        "features": "box_head(box_pooler(ground-truth boxes))" + (" + sampled background proposals" if background else ""),
        "num_classes": heads.num_classes + int(background),
        "transform": f"ResizeShortestEdge({cfg.INPUT.MIN_SIZE_TEST}, {cfg.INPUT.MAX_SIZE_TEST}) {cfg.INPUT.FORMAT} "
                     f"mean={list(cfg.MODEL.PIXEL_MEAN)} std={list(cfg.MODEL.PIXEL_STD)}",
    }


def compute_box_head_stats(cfg, model, loader=None):
    """``ClassStats`` of the box-head features on GT boxes of ``cfg.DATASETS.TRAIN``."""
    model = unwrap(model)
    heads = adarand_roi_heads(model)
    if heads is None:
        raise ValueError("the model has no AdaRandROIHeads (set MODEL.ROI_HEADS.NAME: AdaRandROIHeads)")
    background = heads.regularize_background
    acc = ClassStatsAccumulator(heads.num_classes + int(background))
    loader = loader if loader is not None else build_stats_loader(cfg)
    was_training = model.training
    model.eval()
    try:
        with EventStorage():
            for batch in loader:
                _update(acc, model, heads, batch, background)
    finally:
        model.train(was_training)
    try:
        return acc.finalize(extractor=f"{cfg.MODEL.META_ARCHITECTURE} box head ({cfg.MODEL.WEIGHTS or 'random init'})",
                            meta={"datasets": list(cfg.DATASETS.TRAIN), "identity": stats_identity(cfg, model)},
                            allow_missing=cfg.MODEL.ADARAND.ALLOW_MISSING_CLASSES)
    except ValueError:
        if acc.counts is None:
            raise
        names = list(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", [])) + ["background"]
        missing = [names[i] if i < len(names) else str(i) for i in (acc.counts == 0).nonzero().flatten().tolist()]
        raise ValueError(f"no ground-truth box of class(es) {missing} in {list(cfg.DATASETS.TRAIN)}: every class "
                         "needs at least one to initialise the prior (fix ROI_HEADS.NUM_CLASSES or the data, or set "
                         "MODEL.ADARAND.ALLOW_MISSING_CLASSES True)") from None


def stats_path(cfg):
    """STATS_FILE, or the cache OUTPUT_DIR/adarand_stats.pt when it is empty."""
    return cfg.MODEL.ADARAND.STATS_FILE or os.path.join(cfg.OUTPUT_DIR, STATS_NAME)


def init_prior(cfg, model):
    """Initialise the prior of a model that needs statistics (Eq. 9-10).

    The statistics come from MODEL.ADARAND.STATS_FILE (refused unless produced by this
    model's weights and data, see :func:`stats_identity`), else from the cache
    OUTPUT_DIR/adarand_stats.pt when it has the same identity, else are computed and
    cached. Returns the statistics used (None when the method needs none).
    """
    heads = adarand_roi_heads(model)
    if heads is None or not heads.regularizer.needs_stats:
        return None
    reg, path = heads.regularizer, stats_path(cfg)
    explicit = bool(cfg.MODEL.ADARAND.STATS_FILE)
    if explicit and not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.ADARAND.STATS_FILE not found: {path}")
    stats = load_or_compute_stats(path, stats_identity(cfg, model), lambda: compute_box_head_stats(cfg, model),
                                  explicit=explicit, num_classes=reg.num_classes, feat_dim=reg.feat_dim,
                                  save=comm.is_main_process())
    comm.synchronize()
    reg.init_from_stats(stats)
    return stats
