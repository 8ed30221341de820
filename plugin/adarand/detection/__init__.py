"""Detectron2 plugin: AdaRand on the ROI box-head features of R-CNN detectors and on the per-pixel features of
semantic-segmentation heads.

In your own Detectron2 project::

    import adarand.detection  # registers the AdaRand ROI and sem-seg heads and the VOC splits (incl. sem-seg)
    from adarand.detection import add_adarand_config

    cfg = get_cfg(); add_adarand_config(cfg); cfg.merge_from_file(...)

(or ``cfg = setup_cfg(args)`` from Detectron2's ``default_argument_parser``, as tools/train_net.py does)

and set ``MODEL.ROI_HEADS.NAME: AdaRandROIHeads`` (or ``AdaRandCascadeROIHeads``; any other
head: mix in :class:`AdaRandHeadsMixin`), or ``MODEL.SEM_SEG_HEAD.NAME: AdaRandSemSegFPNHead``
(``AdaRandDeepLabV3PlusHead``, ``AdaRandDeepLabV3Head``; docs/segmentation.md). Train with
:class:`AdaRandDetectionTrainer` or
``tools/lazyconfig_train_net.py`` (or add :class:`AdaRandPriorHook` and call :func:`init_prior`
in your own trainer).
"""
from . import mobilenet_fpn  # noqa: F401  (registers the MobileNetV2-FPN backbone)
from .checkpoint import SafeDetectionCheckpointer
from .box_branch import BoxRegularization, build_box_regularizations
from .config_keys import adarand_options, add_adarand_config, check_adarand_config
from .hooks import AdaRandPriorHook
from .prior_init import collect_box_head_stats, compute_box_head_stats, init_prior, stats_path
from .roi_heads import AdaRandCascadeROIHeads, AdaRandHeadsMixin, AdaRandROIHeads, BoxRows, box_regularizations
from .dense_branch import DenseRegularization, PixelRows, build_dense_regularization
from .regularized import adarand_heads, check_initialised, check_method_has_heads, regularizations, unwrap
from .sem_seg_heads import AdaRandDeepLabV3Head, AdaRandDeepLabV3PlusHead, AdaRandSemSegFPNHead, AdaRandSemSegMixin
from .run_setup import get_detection_cfg, load_detection_cfg, setup_cfg
from .trainer import AdaRandDetectionTrainer, build_evaluator
from .voc import VOC_CLASSES, load_voc_detection, load_voc_instance_segmentation, register_voc
from .voc_sem_seg import load_voc_sem_seg, load_voc_sem_seg_train_aug, register_voc_sem_seg, voc_palette

register_voc()
register_voc_sem_seg()

__all__ = [
    "AdaRandDeepLabV3Head", "AdaRandDeepLabV3PlusHead", "AdaRandSemSegFPNHead", "AdaRandSemSegMixin",
    "DenseRegularization", "PixelRows", "build_dense_regularization", "regularizations",
    "AdaRandCascadeROIHeads", "AdaRandHeadsMixin", "AdaRandPriorHook", "AdaRandROIHeads", "AdaRandDetectionTrainer",
    "BoxRegularization", "BoxRows", "SafeDetectionCheckpointer", "VOC_CLASSES", "adarand_heads", "adarand_options",
    "add_adarand_config", "box_regularizations", "build_box_regularizations", "check_adarand_config",
    "get_detection_cfg", "load_detection_cfg", "setup_cfg", "build_evaluator", "check_method_has_heads",
    "check_initialised", "collect_box_head_stats", "compute_box_head_stats", "init_prior", "load_voc_detection", "load_voc_instance_segmentation", "load_voc_sem_seg",
    "load_voc_sem_seg_train_aug", "register_voc", "register_voc_sem_seg", "stats_path", "unwrap", "voc_palette",
]
