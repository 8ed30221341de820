"""Entry points of ``tools/train_cls.py``: argument parser, :func:`train`, :func:`eval_only`, :func:`main`.

Under ``torchrun`` each process joins the group through env:// (NCCL on CUDA, gloo on CPU);
SOLVER.BATCH_SIZE is the total over all processes.
"""
import argparse
import json
import logging
import os

import torch.distributed as dist

from adarand.distributed import init_from_env, is_distributed, rank
from adarand.files import claim_output_dir, release_output_dir, write_json, write_text
from adarand.run_config import CLS_SAFE_RESUME_KEYS, add_resume_arguments, cfg_as_recorded, checked_resume_changes, \
    history_header, record_changes

from . import build
from .backbones import load_strictly
from .checkpoint import load_checkpoint
from .config import load_cfg
from .trainer import ClassificationTrainer, seed_all

CHECKPOINTS = ("last.pth", "best.pth")  # a directory holding one of them holds a run


def get_args_parser(description=None):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config (may name a _BASE_)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth when it exists")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate TEST.WEIGHTS (default OUTPUT_DIR/best.pth) on the test split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_resume_arguments(parser, CLS_SAFE_RESUME_KEYS, "epoch")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    return parser


def train(cfg, resume=False, progress=True, extra_hooks=(), allow_config_change=False):
    """Claim OUTPUT_DIR (one run per directory; refused when it holds another run's checkpoint
    unless ``resume``; a resume refused when the config differs from the run's, see
    :mod:`adarand.run_config`), write config.yaml, then ``ClassificationTrainer`` -> ``resume_or_load``
    -> ``train``; ``extra_hooks`` run after the default ones. Returns the results dict."""
    init_from_env()
    out = cfg.OUTPUT_DIR
    resuming = resume and os.path.isfile(os.path.join(out, "last.pth"))
    changes = None
    if rank() == 0:
        claim_output_dir(out, resume, CHECKPOINTS)  # held until the process exits
        changes = checked_resume_changes(out, lambda: cfg_as_recorded(cfg), resuming, CLS_SAFE_RESUME_KEYS,
                                         allow_config_change)
        if not resuming:  # a new run (an earlier attempt that never saved a checkpoint leaves no history)
            write_text(os.path.join(out, "config.yaml"), cfg.dump())
    trainer = ClassificationTrainer(cfg, progress=progress)
    trainer.register_hooks(extra_hooks)
    trainer.resume_or_load(resume=resume)
    if rank() == 0 and resuming:  # the changes take effect at the first epoch trained from here
        trainer.config_changes = record_changes(out, changes, "epoch", trainer.start_epoch + 1)
        write_text(os.path.join(out, "config.yaml"), history_header(trainer.config_changes) + cfg.dump())
    results = trainer.train()
    if rank() == 0:
        release_output_dir(out)  # a failed run keeps it until its process ends
    return results


def eval_only(cfg):
    """Evaluate a checkpoint of this trainer (TEST.WEIGHTS, default OUTPUT_DIR/best.pth) on the test split."""
    device = init_from_env()
    seed_all(cfg.SEED)
    raw = build.raw_train_set(cfg)
    model = ClassificationTrainer.build_model(cfg, raw.num_classes).to(device)
    data = build.build_data(cfg, raw, *build.normalization(cfg, model))
    path = cfg.TEST.WEIGHTS or os.path.join(cfg.OUTPUT_DIR, "best.pth")
    load_strictly(model, load_checkpoint(path, map_location=device)["model"], path, cfg.MODEL.BACKBONE,
                  key="TEST.WEIGHTS", what=f"{cfg.MODEL.BACKBONE} model of {cfg.DATASET.NAME} ({raw.num_classes} "
                  "classes)", hint="is it a checkpoint of this trainer for this DATASET and MODEL.BACKBONE?")
    test = ClassificationTrainer.test(cfg, model, ClassificationTrainer.build_test_loader(cfg, data.test),
                                      data.num_classes, data.test_class_indices)
    results = {"weights": path, "dataset": cfg.DATASET.NAME, "test_top1": test.top1,
               "test_mean_class_acc": test.mean_class_acc}
    if rank() == 0:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        write_json(os.path.join(cfg.OUTPUT_DIR, "eval_results.json"), results)
    return results


def main(argv=None, description=None):
    """Parse ``argv``, train (or evaluate with --eval-only) and print the results as one JSON line."""
    args = get_args_parser(description).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = load_cfg(args.config_file, args.opts)
    try:
        results = eval_only(cfg) if args.eval_only else train(
            cfg, resume=args.resume, progress=not args.no_progress, allow_config_change=args.allow_config_change)
        if rank() == 0:
            print(json.dumps(results))
    finally:
        if is_distributed():
            dist.destroy_process_group()
    return results
