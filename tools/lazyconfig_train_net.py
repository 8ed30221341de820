#!/usr/bin/env python
"""Fine-tune a detector or a semantic-segmentation model from a LazyConfig (Detectron2's Python configs) with AdaRand.

    python tools/lazyconfig_train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.py
    python tools/lazyconfig_train_net.py --config-file configs/segmentation/semantic_R_50_FPN_voc2012_adarand.py
    python tools/lazyconfig_train_net.py --config-file ... --num-gpus 8 [--resume [--allow-config-change]] [key=value ...]
    python tools/lazyconfig_train_net.py --config-file ... --eval-only train.init_checkpoint=output/.../model_final.pth

Detectron2's ``lazyconfig_train_net.py`` loop (SimpleTrainer or AMPTrainer and its hooks),
plus the prior: the config's ``model.roi_heads.adarand`` (or ``model.sem_seg_head.adarand``) holds the
``MODEL.ADARAND`` keys; the prior is initialised after the weights are loaded (statistics from
``dataloader.stats``, cached in ``train.output_dir``, or ``STATS_FILE``) unless a checkpoint
is resumed, and :class:`~adarand.detection.AdaRandPriorHook` steps it after every step.
"""
import logging

from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer, SimpleTrainer, default_argument_parser, default_writers, hooks, launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from adarand.detection import SafeDetectionCheckpointer, check_method_has_heads, collect_box_head_stats
from adarand.detection.config_keys import check_adarand_keys
from adarand.detection.mapper import SingleCategoryMapper
from adarand.detection.prior_init import init_prior_from, lazy_stats_identity
from adarand.detection.run_setup import checked_default_setup, lazy_cfg_as_recorded
from adarand.detection.trainer import build_prior_hook, insert_prior_hook, load_weights_and_prior
from adarand.runs.resume import LAZY_SAFE_RESUME_KEYS, add_resume_arguments

logger = logging.getLogger("adarand")


HEADS = ("roi_heads", "sem_seg_head")  # the heads whose ``adarand`` node holds the MODEL.ADARAND keys


def adarand_settings(cfg):
    """(where, keys): the ``MODEL.ADARAND`` keys of the config's regularized head, ROI heads first, and their
    path in the config; (None, None) for a model without AdaRand."""
    for head in HEADS:
        if head in cfg.model and "adarand" in cfg.model[head]:
            return f"model.{head}.adarand", cfg.model[head].adarand
    return None, None


def do_test(cfg, model):
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def compute_stats(cfg, model, options):
    """Every regularized branch's statistics on ``dataloader.stats`` (:func:`adarand.detection.init_prior`'s
    computation, from a LazyConfig)."""
    names = cfg.dataloader.stats.dataset_names
    return collect_box_head_stats(
        model, instantiate(cfg.dataloader.stats), rois=options["STATS_ROIS"],
        allow_missing=options["ALLOW_MISSING_CLASSES"], extractor=f"{cfg.train.init_checkpoint or 'random init'}",
        meta={"datasets": [names] if isinstance(names, str) else list(names)})


def init_prior(cfg, model):
    """``adarand.detection.init_prior`` (one rule: ``init_prior_from``) with what a LazyConfig holds: its
    ``MODEL.ADARAND`` keys, output directory, statistics loader and statistics identity."""
    _, options = adarand_settings(cfg)
    return init_prior_from(model, options, cfg.train.output_dir, compute=lambda: compute_stats(cfg, model, options),
                           identity=lazy_stats_identity(cfg))


def build_model(cfg):
    where, options = adarand_settings(cfg)
    if options is not None:
        check_adarand_keys(options, where)
    model = instantiate(cfg.model)
    if options is not None:
        check_method_has_heads(options["METHOD"], model)
    return model.to(cfg.train.device)


def do_train(args, cfg):
    model = build_model(cfg)
    logger.info("Model:\n%s", model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    _, options = adarand_settings(cfg)
    if options is not None and options["LABELS"] == "image":
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
    if options is not None:
        insert_prior_hook(hook_list, build_prior_hook(options))
    trainer.register_hooks(hook_list)

    resuming = load_weights_and_prior(checkpointer, cfg.train.init_checkpoint, args.resume,
                                      None if options is None else lambda: init_prior(cfg, model))
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
        load_weights_and_prior(SafeDetectionCheckpointer(model), cfg.train.init_checkpoint, False, init_prior=None)
        return do_test(cfg, model)
    do_train(args, cfg)


if __name__ == "__main__":
    args = add_resume_arguments(default_argument_parser(), LAZY_SAFE_RESUME_KEYS, "iteration").parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
