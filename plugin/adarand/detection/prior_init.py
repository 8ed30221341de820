"""Prior initialisation (Eq. 9-10) from the pre-trained model's box-head and per-pixel features.

For every training image (test-time resize, no flip), in eval mode and without grad: the
backbone, then each regularized head (:func:`~adarand.detection.regularized.regularizations`);
the features are accumulated per class with :class:`adarand.ClassStatsAccumulator`, one
accumulator per branch. A semantic-segmentation head gives every cell of its predictor's input,
labelled by the ground truth (``sem_seg``) at the cell's centre, ignore pixels excluded (the rule
of :mod:`adarand.dense`). ROI heads: ``box_pooler`` on the ROIs given by ``STATS_ROIS`` -> each
regularized stage's ``box_head``, flattened. ``STATS_ROIS "gt"``: the
ground-truth boxes with their classes; ``"proposals"``: the ROIs the sampler draws from the
pre-trained RPN's training-mode proposals, labelled as training labels them (``LABELS``).
With ``REGULARIZE_BACKGROUND`` the background class (index NUM_CLASSES) gets the features of
the background proposals the ROI sampler draws, as in training. Under torch.distributed
each rank reads its shard and the sums are all-reduced.
"""
import contextlib
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    DatasetFromList, MetadataCatalog, build_detection_test_loader, get_detection_dataset_dicts,
)
from detectron2.data import transforms as T
from detectron2.structures import ImageList
from detectron2.utils import comm
from detectron2.utils.events import EventStorage

from adarand import ClassStats, ClassStatsAccumulator
from adarand.runs.resume import flatten
from adarand.runs.stats_cache import extractor_identity, load_or_compute_stats, stamp_identity, statistics_identity

from .dense_branch import DenseRegularization
from .mapper import NamedErrorsMapper, SingleCategoryMapper
from .regularized import adarand_heads, regularizations, unwrap
from .roi_heads import AdaRandHeadsMixin
from .sem_seg_heads import AdaRandSemSegMixin

STATS_NAME = "adarand_stats.pt"


def build_stats_loader(cfg: CfgNode) -> Iterable[list[dict[str, Any]]]:
    """Training images with their annotations (and ``sem_seg``), resized as at test time, one per batch."""
    return stats_loader(cfg.DATASETS.TRAIN, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.INPUT.FORMAT,
                        cfg.MODEL.ADARAND.STATS_MAX_IMAGES, cfg.MODEL.ADARAND.LABELS)


def stats_loader(dataset_names: Sequence[str], min_size: int, max_size: int, image_format: str = "BGR",
                 max_images: int = 0, labels: str = "roi") -> Iterable[list[dict[str, Any]]]:
    """The statistics loader from explicit arguments (LazyConfigs call this one).

    ``labels="image"``: an image with several categories is an error naming it.
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    dicts = get_detection_dataset_dicts(names, filter_empty=True)
    if max_images > 0:
        dicts = dicts[:max_images]
    mapper: Any = NamedErrorsMapper(is_train=True, augmentations=[T.ResizeShortestEdge(min_size, max_size)],
                               image_format=image_format, use_instance_mask=False, recompute_boxes=False)
    if labels == "image":
        mapper = SingleCategoryMapper(mapper)
    return build_detection_test_loader(DatasetFromList(dicts, copy=False), mapper=mapper)


@contextlib.contextmanager
def statistics_modes(model: torch.nn.Module, training_proposals: bool) -> Iterator[None]:
    """The modes of the statistics pass, set once for the whole pass and restored after it: the model in eval
    mode (test-time normalisation, no dropout) and, with ``training_proposals``, its proposal generator's own
    forward in training mode (training's top-k: the proposals a step's ROI sampler draws from; its anchor
    losses are computed and dropped), its submodules left in eval mode."""
    was_training = model.training
    model.eval()
    if training_proposals:
        model.proposal_generator.training = True
    try:
        yield
    finally:
        model.train(was_training)


def _images(model, batch):
    """The batch's images normalised and padded as the model's forward does (``SemanticSegmentor`` has no
    ``preprocess_image``; the R-CNNs' does the same)."""
    if hasattr(model, "preprocess_image"):
        return model.preprocess_image(batch)
    images = [(x["image"].to(model.device) - model.pixel_mean) / model.pixel_std for x in batch]
    return ImageList.from_tensors(images, model.backbone.size_divisibility,
                                  padding_constraints=model.backbone.padding_constraints)


def _sem_seg_targets(model, batch):
    """The batch's ``sem_seg`` padded with the head's ignore value, as the model's forward pads them."""
    if "sem_seg" not in batch[0]:
        raise ValueError(f"the statistics of the semantic-segmentation head need the ground truth 'sem_seg' "
                         f"({batch[0].get('file_name', 'a training image')} has none: its dataset dict needs "
                         "'sem_seg_file_name')")
    return ImageList.from_tensors([x["sem_seg"].to(model.device) for x in batch], model.backbone.size_divisibility,
                                  model.sem_seg_head.ignore_value, model.backbone.padding_constraints).tensor


@torch.no_grad()
def _update(accumulators, model, heads, batch, rois):
    images = _images(model, batch)
    features = model.backbone(images.tensor)
    rows = {}
    for head in heads:
        if isinstance(head, AdaRandSemSegMixin):
            rows.update(head.statistics_rows(features, _sem_seg_targets(model, batch)))
        elif isinstance(head, AdaRandHeadsMixin):
            targets = [x["instances"].to(model.device) for x in batch]
            needed = head.statistics_need_proposals(rois)
            proposals = model.proposal_generator(images, features, targets)[0] if needed else None
            rows.update(head.statistics_rows(features, proposals, targets, rois))
        else:
            raise TypeError(f"the statistics pass knows ROI heads and semantic-segmentation heads; "
                            f"{type(head).__name__} is neither")
    for branch, (f, y) in rows.items():
        accumulators[branch].update(f, y)  # rows labelled IGNORE_INDEX are not counted


def collect_box_head_stats(model: torch.nn.Module, loader: Iterable[list[dict[str, Any]]], rois: str = "gt",
                           allow_missing: bool = False, extractor: str = "", meta: Mapping[str, Any] | None = None,
                           class_names: Sequence[str] = (), stuff_names: Sequence[str] = ()) -> list[ClassStats]:
    """``ClassStats`` of each regularized branch's features over ``loader`` (list, in
    :func:`~adarand.detection.regularized.regularizations` order: box branches by stage, dense heads).
    ``class_names``: the detector's classes; ``stuff_names``: the semantic head's (error messages)."""
    model = unwrap(model)
    regs = regularizations(model)
    if not regs:
        raise ValueError("the model has no AdaRand heads (set MODEL.ROI_HEADS.NAME: AdaRandROIHeads or "
                         "AdaRandCascadeROIHeads, or MODEL.SEM_SEG_HEAD.NAME: AdaRandSemSegFPNHead, "
                         "AdaRandDeepLabV3PlusHead or AdaRandDeepLabV3Head)")
    heads = adarand_heads(model)
    accumulators = {reg: ClassStatsAccumulator(reg.regularizer.num_classes) for reg in regs}
    proposals = any(isinstance(h, AdaRandHeadsMixin) and h.statistics_need_proposals(rois) for h in heads)
    with statistics_modes(model, proposals), EventStorage():
        for batch in loader:
            _update(accumulators, model, heads, batch, rois)
    return [_finalize(accumulators[reg], reg, rois, allow_missing, extractor, meta or {}, class_names, stuff_names)
            for reg in regs]


def _finalize(acc, reg, rois, allow_missing, extractor, meta, class_names, stuff_names):
    """One branch's ``ClassStats``, or the error naming the classes that had no row."""
    dense = isinstance(reg, DenseRegularization)
    if dense:
        meta, where, rows, names = {**meta, "rows": "labelled cells"}, f"{reg.name} head", "labelled pixel", stuff_names
        key = "SEM_SEG_HEAD.NUM_CLASSES"
    else:
        meta, where = {**meta, "stats_rois": rois, "labels": reg.labels}, f"box head {reg.stage}"
        rows, names = ("ground-truth box" if rois == "gt" else "sampled ROI"), list(class_names) + ["background"]
        key = "ROI_HEADS.NUM_CLASSES"
    try:
        return acc.finalize(extractor=f"{extractor} {where}".strip(), meta=meta, allow_missing=allow_missing)
    except ValueError:
        if acc.counts is None:
            raise
        missing = [names[i] if i < len(names) else str(i) for i in (acc.counts == 0).nonzero().flatten().tolist()]
        raise ValueError(f"no {rows} of class(es) {missing} in {meta.get('datasets', 'the training set')}: every "
                         f"class needs at least one to initialise the prior (fix {key} or the data, or set "
                         "MODEL.ADARAND.ALLOW_MISSING_CLASSES True)") from None


def compute_box_head_stats(cfg: CfgNode, model: torch.nn.Module,
                           loader: Iterable[list[dict[str, Any]]] | None = None) -> list[ClassStats]:
    """``ClassStats`` of each regularized branch on ``cfg.DATASETS.TRAIN`` (list, as :func:`collect_box_head_stats`),
    each recording its identity (:func:`branch_identity`), so a file saved from it is accepted as
    ``STATS_FILE`` by a run of the same set-up."""
    options = cfg.MODEL.ADARAND
    identity = stats_identity(cfg)
    stats = collect_box_head_stats(
        model, loader if loader is not None else build_stats_loader(cfg), rois=options.STATS_ROIS,
        allow_missing=options.ALLOW_MISSING_CLASSES, extractor=f"{cfg.MODEL.META_ARCHITECTURE} ({cfg.MODEL.WEIGHTS or 'random init'})",
        meta={"datasets": list(cfg.DATASETS.TRAIN)},
        class_names=MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", []),
        stuff_names=MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("stuff_classes", []))
    weights = weights_identity(model)
    return [stamp_identity(st, branch_identity(weights, identity, reg))
            for st, reg in zip(stats, regularizations(model))]


def stats_path(cfg: CfgNode) -> str:
    """STATS_FILE, or the cache OUTPUT_DIR/adarand_stats.pt when it is empty."""
    return stats_file(cfg.MODEL.ADARAND, cfg.OUTPUT_DIR)


def stats_file(options: Mapping[str, Any], output_dir: str) -> str:
    """:func:`stats_path` from the ``MODEL.ADARAND`` keys and the run's output directory (any config kind)."""
    return options["STATS_FILE"] or os.path.join(output_dir, STATS_NAME)


def branch_path(path: str, reg: Any) -> str:
    """The statistics file of one branch: ``path`` itself for the single box branch, else ``<stem>_<name><ext>``
    (``_stage<k>`` in a cascade, ``_sem_seg`` for a semantic-segmentation head)."""
    if not reg.name:
        return path
    stem, ext = os.path.splitext(path)
    return f"{stem}_{reg.name}{ext}"


def stats_identity(cfg: CfgNode) -> dict[str, Any]:
    """What the box-head statistics depend on besides the weights (a plain dict: add a key for any new setting)."""
    options = cfg.MODEL.ADARAND
    return {
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE, "backbone": cfg.MODEL.BACKBONE.NAME,
        "roi_heads": cfg.MODEL.ROI_HEADS.NAME, "box_head": cfg.MODEL.ROI_BOX_HEAD.NAME, "weights": cfg.MODEL.WEIGHTS,
        "datasets": list(cfg.DATASETS.TRAIN),
        "dataset_dirs": [os.path.abspath(str(MetadataCatalog.get(d).get("dirname", ""))) for d in cfg.DATASETS.TRAIN],
        "max_images": options.STATS_MAX_IMAGES, **adarand_keys_identity(options),
        "transform": f"ResizeShortestEdge({cfg.INPUT.MIN_SIZE_TEST}, {cfg.INPUT.MAX_SIZE_TEST}) {cfg.INPUT.FORMAT} "
                     f"mean={list(cfg.MODEL.PIXEL_MEAN)} std={list(cfg.MODEL.PIXEL_STD)}",
        **roi_sampler_identity(cfg), **sem_seg_identity(cfg),
    }


def lazy_stats_identity(cfg: Any) -> dict[str, Any]:
    """:func:`stats_identity` of a LazyConfig: its initial checkpoint, its statistics loader (as YAML), the
    ``adarand`` keys (:func:`adarand_keys_identity`; the ROI heads', else the semantic-segmentation head's),
    :func:`lazy_roi_sampler_identity` and :func:`lazy_sem_seg_identity`."""
    from omegaconf import OmegaConf

    model = cfg.model
    roi_heads = "roi_heads" in model and "adarand" in model.roi_heads
    keys = model.roi_heads.adarand if roi_heads else model.sem_seg_head.adarand
    return {"weights": cfg.train.init_checkpoint, "stats_loader": OmegaConf.to_yaml(cfg.dataloader.stats),
            **adarand_keys_identity(keys), **(lazy_roi_sampler_identity(cfg) if roi_heads else {}),
            **lazy_sem_seg_identity(cfg)}


def lazy_sem_seg_identity(cfg: Any) -> dict[str, Any]:
    """:func:`sem_seg_identity` of a LazyConfig: its semantic-segmentation head (the class), its input features
    and ignore value; empty without an AdaRand one."""
    head = cfg.model.get("sem_seg_head")
    if head is None or "adarand" not in head:
        return {}
    target = head._target_
    return {"sem_seg_head": target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}",
            "sem_seg_in_features": sorted(head.get("input_shape", {})), "ignore_value": head.get("ignore_value")}


def adarand_keys_identity(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``MODEL.ADARAND`` keys that decide which rows the statistics are taken on (a CfgNode, or a
    LazyConfig's ``model.roi_heads.adarand``)."""
    return {"stats_rois": options["STATS_ROIS"], "labels": options["LABELS"],
            "regularize_background": options["REGULARIZE_BACKGROUND"]}


def sem_seg_identity(cfg: CfgNode) -> dict[str, Any]:
    """What a semantic-segmentation head's statistics depend on besides the weights (its head and ignore
    value), for the meta-architectures that have one; empty otherwise."""
    if cfg.MODEL.META_ARCHITECTURE not in ("SemanticSegmentor", "PanopticFPN"):
        return {}
    head = cfg.MODEL.SEM_SEG_HEAD
    return {"sem_seg_head": head.NAME, "sem_seg_in_features": list(head.IN_FEATURES),
            "ignore_value": head.IGNORE_VALUE}


def roi_sampler_identity(cfg: CfgNode) -> dict[str, Any]:
    """What decides which ROIs are sampled and how they are labelled, when the statistics are taken on
    proposals (``STATS_ROIS proposals``, or the background regularized): the ROI heads' matcher
    (IoU thresholds and labels), sampling (batch size per image, positive fraction, ground truth
    appended), the cascade's IoUs, and the proposal generator (RPN and anchors). Empty otherwise."""
    options = cfg.MODEL.ADARAND
    if options.STATS_ROIS != "proposals" and not options.REGULARIZE_BACKGROUND:
        return {}
    m = cfg.MODEL
    matching = ("IOU_THRESHOLDS", "IOU_LABELS", "BATCH_SIZE_PER_IMAGE", "POSITIVE_FRACTION", "PROPOSAL_APPEND_GT",
                "NUM_CLASSES")
    return {"roi_sampler": {
        **flatten({k: m.ROI_HEADS[k] for k in matching}, "ROI_HEADS."),
        "ROI_BOX_CASCADE_HEAD.IOUS": list(m.ROI_BOX_CASCADE_HEAD.IOUS), "PROPOSAL_GENERATOR": m.PROPOSAL_GENERATOR.NAME,
        **flatten(m.RPN, "RPN."), **flatten(m.ANCHOR_GENERATOR, "ANCHOR_GENERATOR."),
    }}


def lazy_roi_sampler_identity(cfg: Any) -> dict[str, Any]:
    """:func:`roi_sampler_identity` of a LazyConfig: its ROI heads' matcher and sampling, and its
    proposal generator, as YAML (empty when the statistics are taken on ground-truth boxes only)."""
    from omegaconf import OmegaConf

    heads, options = cfg.model.roi_heads, cfg.model.roi_heads.adarand
    if options["STATS_ROIS"] != "proposals" and not options["REGULARIZE_BACKGROUND"]:
        return {}
    sampling = {k: heads.get(k) for k in ("batch_size_per_image", "positive_fraction", "proposal_append_gt",
                                          "num_classes")}
    return {"roi_sampler": {
        "proposal_matcher": OmegaConf.to_yaml(heads.proposal_matcher) if "proposal_matcher" in heads else None,
        **sampling,
        "proposal_generator": OmegaConf.to_yaml(cfg.model.proposal_generator)}}


def weights_identity(model: torch.nn.Module) -> dict[str, Any]:
    """The detector's weights, without the regularizers' own state (which training changes)."""
    state = {k: v for k, v in unwrap(model).state_dict().items() if ".adarand." not in k}
    return extractor_identity("detection", state)


def branch_identity(weights: Mapping[str, Any], identity: Mapping[str, Any] | None, reg: Any) -> dict[str, Any]:
    """The identity of one box branch's statistics (:func:`adarand.runs.stats_cache.statistics_identity`): the
    ``weights`` (:func:`weights_identity`), the caller's settings, the branch."""
    return statistics_identity(weights, identity or {}, branch=reg.name or "box")


def init_prior(cfg: CfgNode, model: torch.nn.Module) -> list[ClassStats] | None:
    """Initialise the priors of a model that needs statistics (Eq. 9-10).

    The statistics come from MODEL.ADARAND.STATS_FILE (refused unless produced by this
    model's weights and data, see :func:`stats_identity`), else from the cache
    OUTPUT_DIR/adarand_stats.pt when it has the same identity, else are computed and
    cached. Returns the statistics used (one per regularized box branch), or None when the
    method needs none.
    """
    return init_prior_from(model, cfg.MODEL.ADARAND, cfg.OUTPUT_DIR, compute=lambda: compute_box_head_stats(cfg, model),
                           identity=stats_identity(cfg))


def init_prior_from(model: torch.nn.Module, options: Mapping[str, Any], output_dir: str,
                    compute: Callable[[], list[ClassStats]],
                    identity: Mapping[str, Any] | None = None) -> list[ClassStats] | None:
    """:func:`init_prior` of any config kind (``tools/lazyconfig_train_net.py`` calls it with a LazyConfig's):
    load each branch's statistics from :func:`stats_file` (see :func:`branch_path`), or ``compute()`` and save them.

    Args:
        model: the model whose regularized branches need statistics.
        options: the ``MODEL.ADARAND`` keys. A given STATS_FILE that is missing, or produced by other weights or
            data (``identity`` plus the weights' hash, see :mod:`adarand.runs.stats_cache`), is an error instead of a
            cache miss; ALLOW_MISSING_CLASSES False refuses a file with classes of no sample, as ``compute``
            refuses them.
        output_dir: the run's, where the statistics are cached when STATS_FILE is empty.
        compute: ``() ->`` every branch's statistics (:func:`collect_box_head_stats`' list), run on the first miss.
        identity: what the statistics depend on besides the weights.
    """
    path, required = stats_file(options, output_dir), bool(options["STATS_FILE"])
    regs = regularizations(model)
    if not any(reg.regularizer.needs_stats for reg in regs):
        return None
    compute_all = functools.cache(compute)  # one statistics pass gives every branch's, run on the first miss
    weights = weights_identity(model)
    stats = [load_or_compute_stats(branch_path(path, reg), branch_identity(weights, identity, reg),
                                   lambda i=i: compute_all()[i], explicit=required,  # type: ignore[misc]
                                   num_classes=reg.regularizer.num_classes, feat_dim=reg.regularizer.feat_dim,
                                   save=comm.is_main_process(), allow_missing=options["ALLOW_MISSING_CLASSES"])
             for i, reg in enumerate(regs)]
    comm.synchronize()
    for reg, st in zip(regs, stats):
        reg.regularizer.init_from_stats(st)
    return stats
