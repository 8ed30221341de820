#!/usr/bin/env python
"""Fine-tune a detector from a LazyConfig (Detectron2's Python configs) with AdaRand.

    python tools/lazyconfig_train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.py
    python tools/lazyconfig_train_net.py --config-file ... --num-gpus 8 [--resume [--allow-config-change]] [key=value ...]
    python tools/lazyconfig_train_net.py --config-file ... --eval-only train.init_checkpoint=output/.../model_final.pth

Detectron2's ``lazyconfig_train_net.py`` loop (SimpleTrainer or AMPTrainer and its hooks),
plus the prior: the config's ``model.roi_heads.adarand`` holds the ``MODEL.ADARAND`` keys;
the prior is initialised after the weights are loaded (statistics from
``dataloader.stats``, cached in ``train.output_dir``, or ``STATS_FILE``) unless a checkpoint
is resumed, and :class:`~adarand.detection.AdaRandPriorHook` steps it after every step.
"""
import logging
import os

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer, SimpleTrainer, default_argument_parser, default_writers, hooks, launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from adarand.detection import SafeDetectionCheckpointer, check_method_has_heads, collect_box_head_stats
from adarand.detection.mapper import SingleCategoryMapper
from adarand.detection.config_keys import check_adarand_keys
from adarand.detection.prior_init import STATS_NAME, init_prior_from, lazy_stats_identity
from adarand.detection.trainer import build_prior_hook, check_weights, insert_prior_hook, load_weights_and_prior
from adarand.detection.run_setup import checked_default_setup, lazy_cfg_as_recorded
from adarand.runs.resume import LAZY_SAFE_RESUME_KEYS, add_resume_arguments

logger = logging.getLogger("adarand")


def adarand_settings(cfg):
    """The ``MODEL.ADARAND`` keys of the config's ROI heads (None for a head without AdaRand)."""
    return cfg.model.roi_heads.get("adarand")


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def init_prior(cfg, model):
    """Initialise the priors from cached/given statistics, or compute them on ``dataloader.stats``."""
    a = adarand_settings(cfg)
    path = a["STATS_FILE"] or os.path.join(cfg.train.output_dir, STATS_NAME)
    names = cfg.dataloader.stats.dataset_names
    return init_prior_from(model, path, required=bool(a["STATS_FILE"]), compute=lambda: collect_box_head_stats(
        model, instantiate(cfg.dataloader.stats), rois=a["STATS_ROIS"], allow_missing=a["ALLOW_MISSING_CLASSES"],
        extractor=f"{cfg.train.init_checkpoint or 'random init'}",
        meta={"datasets": [names] if isinstance(names, str) else list(names)}),
        identity=lazy_stats_identity(cfg), allow_missing=a["ALLOW_MISSING_CLASSES"])


def build_model(cfg):
    a = adarand_settings(cfg)
    if a is not None:
        check_adarand_keys(a, "model.roi_heads.adarand")
    model = instantiate(cfg.model)
    if a is not None:
        check_method_has_heads(a["METHOD"], model)
    return model.to(cfg.train.device)


def do_train(args, cfg):
    model = build_model(cfg)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    a = adarand_settings(cfg)
    if a is not None and a["LABELS"] == "image":
        cfg.dataloader.train.mapper = SingleCategoryMapper(instantiate(cfg.dataloader.train.mapper))
    train_loader = instantiate(cfg.dataloader.train)

    ddp_model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(ddp_model, train_loader, optimizer)
    checkpointer = SafeDetectionCheckpointer(ddp_model, cfg.train.output_dir, trainer=trainer)
    hook_list = [
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ]
    if a is not None:
        insert_prior_hook(hook_list, build_prior_hook(a))
    trainer.register_hooks(hook_list)

    resuming = load_weights_and_prior(checkpointer, cfg.train.init_checkpoint, args.resume,
                                      None if a is None else lambda: init_prior(cfg, model))
    trainer.train(trainer.iter + 1 if resuming else 0, cfg.train.max_iter)


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    # one run per directory, resumed as tools/train_net.py
    checked_default_setup(cfg, args, cfg.train.output_dir, lambda: lazy_cfg_as_recorded(cfg),
                          claim_output=not args.eval_only, safe_keys=LAZY_SAFE_RESUME_KEYS,
                          max_iter_key="train.max_iter")
    if args.eval_only:
        model = create_ddp_model(build_model(cfg))
        check_weights(cfg.train.init_checkpoint)
        SafeDetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(args, cfg)


if __name__ == "__main__":
    args = add_resume_arguments(default_argument_parser(), LAZY_SAFE_RESUME_KEYS, "iteration").parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
