"""The configuration every detection entry point starts from (tools/train_net.py, compute_prior.py,
visualize.py, diagnose_det.py, compare_stats_rois.py and the tests).

The VOC splits are registered when ``adarand.detection`` is imported (under
``$DETECTRON2_DATASETS``, as Detectron2 registers its builtin datasets on import).
"""
import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.projects.deeplab import add_deeplab_config
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from adarand.files import write_text
from adarand.runs.output_dir import claim_output_dir
from adarand.runs.resume import (
    DET_SAFE_RESUME_KEYS, cfg_as_recorded, checked_resume_changes, history_header, read_recorded_config,
    record_changes,
)

from .config_keys import add_adarand_config, check_adarand_config
from .mobilenet_fpn import add_mobilenet_config


def get_detection_cfg() -> CfgNode:
    """Detectron2's defaults plus this plugin's keys: ``MODEL.ADARAND``, ``TEST.VIS_*``, the
    MobileNetV2-FPN backbone's, and DeepLab's (its heads' and poly schedule's)."""
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_adarand_config(cfg)
    add_mobilenet_config(cfg)
    return cfg


def load_detection_cfg(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """:func:`get_detection_cfg` merged with ``config_file`` (and its ``_BASE_``) and ``KEY VALUE``
    overrides, ``MODEL.ADARAND`` checked; not frozen."""
    cfg = get_detection_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    check_adarand_config(cfg)
    return cfg


def setup_cfg(args: argparse.Namespace, claim_output: bool = False) -> CfgNode:
    """The frozen config of ``args`` (Detectron2's ``default_argument_parser``), then
    ``default_setup`` (output dir, config.yaml, logging, seed) and the ``adarand`` logger.

    ``claim_output``: lock OUTPUT_DIR for this run and, unless ``--resume``, refuse it when it
    already holds another run's checkpoint (before anything is written there); a ``--resume``
    whose config differs from the run's is refused or recorded (:func:`checked_default_setup`).
    """
    cfg = load_detection_cfg(args.config_file, args.opts)
    cfg.freeze()
    checked_default_setup(cfg, args, cfg.OUTPUT_DIR, lambda: cfg_as_recorded(cfg), claim_output)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="adarand")
    return cfg


def checked_default_setup(cfg: Any, args: argparse.Namespace, output_dir: str,
                          recorded: Callable[[], Mapping[str, Any]], claim_output: bool = True,
                          safe_keys: Sequence[str] = DET_SAFE_RESUME_KEYS,
                          max_iter_key: str = "SOLVER.MAX_ITER") -> None:
    """Detectron2's ``default_setup`` of a run in ``output_dir``. With ``claim_output`` the main process
    first claims ``output_dir``, and a ``--resume`` from its checkpoint is refused when its config changes
    keys outside ``safe_keys`` (unless ``--allow-config-change``), else its changes are recorded at the
    resumed iteration (:mod:`adarand.runs.resume`). ``recorded``: ``() ->`` the config flattened as
    config.yaml holds it (called only on a resume)."""
    changes = None
    if claim_output and comm.is_main_process():
        claim_output_dir(output_dir, args.resume, ("last_checkpoint",))
        resuming = args.resume and os.path.isfile(os.path.join(output_dir, "last_checkpoint"))
        changes = checked_resume_changes(output_dir, recorded, resuming, safe_keys,
                                         getattr(args, "allow_config_change", False))
        at = resumed_iteration(output_dir, max_iter_key) if resuming else None  # before config.yaml is rewritten
    default_setup(cfg, args)
    if changes is not None:
        record_resume_changes(output_dir, changes, at)


def resumed_iteration(output_dir: str, max_iter_key: str = "SOLVER.MAX_ITER") -> int | None:
    """The first iteration a resume from ``output_dir/last_checkpoint`` trains (``None`` when unknown):
    ``model_<k>.pth`` holds iteration k; ``model_final.pth`` the recorded max_iter - 1."""
    with open(os.path.join(output_dir, "last_checkpoint")) as f:
        name = f.read().strip()
    match = re.fullmatch(r"model_(\d+)\.pth", name)
    if match:
        return int(match.group(1)) + 1
    recorded = read_recorded_config(output_dir) or {}
    return recorded.get(max_iter_key) if name == "model_final.pth" else None


def record_resume_changes(output_dir: str, changes: Mapping[str, Any] | None, at: int | None) -> None:
    """Append ``changes`` to the run's history at iteration ``at`` (:func:`resumed_iteration`, read before
    ``default_setup`` rewrites config.yaml), and head config.yaml (just written) with the whole history."""
    history = record_changes(output_dir, changes, "iter", at)
    if history:
        path = os.path.join(output_dir, "config.yaml")
        with open(path) as f:
            text = f.read()
        write_text(path, history_header(history) + text)


def lazy_cfg_as_recorded(cfg: Any) -> dict[str, Any] | None:
    """A LazyConfig flattened as ``default_setup`` records it (``LazyConfig.save`` to config.yaml)."""
    import tempfile

    from detectron2.config import LazyConfig

    with tempfile.TemporaryDirectory() as folder:
        LazyConfig.save(cfg, os.path.join(folder, "config.yaml"))
        return read_recorded_config(folder)
