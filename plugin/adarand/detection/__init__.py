"""Detectron2 plugin: AdaRand on Mask R-CNN ROI box-head features.

In your own Detectron2 project::

    import adarand.detection  # registers AdaRandROIHeads and the VOC splits
    from adarand.detection import add_adarand_config

    cfg = get_cfg(); add_adarand_config(cfg); cfg.merge_from_file(...)

and set ``MODEL.ROI_HEADS.NAME: AdaRandROIHeads``. Train with :class:`AdaRandTrainer`
(or add :class:`AdaRandPriorHook` and call :func:`init_prior` in your own trainer).
"""
from . import mobilenet_fpn  # noqa: F401  (registers the MobileNetV2-FPN backbone)
from .checkpoint import SafeDetectionCheckpointer
from .config import add_adarand_config, check_adarand_config, regularizer_kwargs
from .hooks import AdaRandPriorHook, adarand_roi_heads, unwrap
from .prior_init import compute_box_head_stats, init_prior, stats_path
from .roi_heads import AdaRandROIHeads
from .trainer import AdaRandTrainer, build_evaluator
from .voc import VOC_CLASSES, load_voc_detection, load_voc_instance_segmentation, register_voc

register_voc()

__all__ = [
    "AdaRandPriorHook", "AdaRandROIHeads", "AdaRandTrainer", "SafeDetectionCheckpointer", "VOC_CLASSES",
    "adarand_roi_heads", "add_adarand_config", "check_adarand_config", "build_evaluator", "compute_box_head_stats", "init_prior",
    "load_voc_detection", "load_voc_instance_segmentation", "register_voc", "regularizer_kwargs",
    "stats_path", "unwrap",
]
