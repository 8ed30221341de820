"""The configuration every detection entry point starts from (tools/train_net.py, compute_prior.py,
visualize.py, diagnose_det.py, compare_stats_rois.py and the tests).

The VOC splits are registered when ``adarand.detection`` is imported (under
``$DETECTRON2_DATASETS``, as Detectron2 registers its builtin datasets on import).
"""
from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from adarand.files import claim_output_dir

from .config import add_adarand_config, check_adarand_config
from .mobilenet_fpn import add_mobilenet_config


def get_detection_cfg():
    """Detectron2's defaults plus this plugin's keys: ``MODEL.ADARAND``, ``TEST.VIS_*`` and the
    MobileNetV2-FPN backbone's."""
    cfg = get_cfg()
    add_adarand_config(cfg)
    add_mobilenet_config(cfg)
    return cfg


def load_detection_cfg(config_file, opts=()):
    """:func:`get_detection_cfg` merged with ``config_file`` (and its ``_BASE_``) and ``KEY VALUE``
    overrides, ``MODEL.ADARAND`` checked; not frozen."""
    cfg = get_detection_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    check_adarand_config(cfg)
    return cfg


def setup_cfg(args, claim_output=False):
    """The frozen config of ``args`` (Detectron2's ``default_argument_parser``), then
    ``default_setup`` (output dir, config.yaml, logging, seed) and the ``adarand`` logger.

    ``claim_output``: lock OUTPUT_DIR for this run and, unless ``--resume``, refuse it when it
    already holds another run's checkpoint (before anything is written there).
    """
    cfg = load_detection_cfg(args.config_file, args.opts)
    cfg.freeze()
    if claim_output and comm.is_main_process():
        claim_output_dir(cfg.OUTPUT_DIR, args.resume, ("last_checkpoint",))
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="adarand")
    return cfg
