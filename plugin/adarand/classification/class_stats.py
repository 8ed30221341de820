"""The pre-trained class statistics of the classification trainer (Eq. 9-10) and what they depend on.

:func:`class_stats` computes them over the training split once and caches them in
``OUTPUT_DIR/class_stats.pt`` with their identity (:func:`stats_identity`); a later run (or a resume) of
the same extractor, weights and data reuses the file (:func:`adarand.runs.stats_cache.load_or_compute_stats`).
"""
import logging
import os
from typing import Any

import torch
from fvcore.common.config import CfgNode
from torch import nn

import adarand
from adarand.runs import stats_cache
from adarand.distributed import rank, world_size

from . import build

logger = logging.getLogger(__name__)


def stats_identity(cfg: CfgNode, model: nn.Module, data: build.Data) -> dict[str, Any]:
    """What the class statistics depend on (:func:`adarand.runs.stats_cache.statistics_identity`): the backbone's
    weights, the extractor's settings, the images and their transform."""
    d = cfg.DATASET
    return stats_cache.statistics_identity(stats_cache.extractor_identity("classification", model.backbone), {
        "backbone": cfg.MODEL.BACKBONE, "weights": cfg.MODEL.WEIGHTS, "checkpoint_format": cfg.MODEL.CHECKPOINT_FORMAT,
        "dataset": d.NAME, "root": os.path.abspath(d.ROOT), "split": "train", "fraction": d.FRACTION,
        "val_fraction": d.VAL_FRACTION, "split_seed": d.SEED, "num_images": len(data.train_eval),
        "transform": repr(data.train_eval.transform)})


def class_stats(cfg: CfgNode, model: nn.Module, data: build.Data, device: torch.device,
                progress: bool = True) -> adarand.ClassStats:
    """Pre-trained class statistics over the training split (eval mode, eval transforms), cached in
    OUTPUT_DIR/class_stats.pt and reused only when produced by the same extractor, weights and data;
    announced in the log (how many images; then reused or computed), a progress bar on rank 0 when ``progress``."""
    def compute():
        model.eval()
        loader = build.eval_loader(cfg, data.train_eval, rank(), world_size())
        return adarand.compute_class_stats(model.features, loader, data.num_classes, device=device,
                                           name=cfg.MODEL.BACKBONE, progress=progress and rank() == 0)

    if rank() == 0:
        logger.info("class statistics of %d training images (%d classes) from the pre-trained %s",
                    len(data.train_eval), data.num_classes, cfg.MODEL.BACKBONE)
    return stats_cache.load_or_compute_stats(os.path.join(cfg.OUTPUT_DIR, "class_stats.pt"),
                                             stats_identity(cfg, model, data), compute, num_classes=data.num_classes,
                                             feat_dim=model.feat_dim, save=rank() == 0)
