#!/usr/bin/env python
"""Fine-tune an image classifier with AdaRand or any other regularizer / baseline.

    python tools/train_cls.py --config-file configs/classification/cars_r50_adarand.yaml \
        [--resume] [--eval-only] [KEY VALUE ...]
    torchrun --nproc_per_node 4 tools/train_cls.py --config-file ... SOLVER.BATCH_SIZE 64

Under torchrun each process joins the group through env:// (NCCL on CUDA, gloo on CPU);
SOLVER.BATCH_SIZE is the total over all processes.
"""
import argparse
import json
import logging

import torch.distributed as dist

from adarand.classification.config import load_cfg
from adarand.classification.trainer import eval_only, fit


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="", metavar="FILE", help="YAML config (may name a _BASE_)")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pth when it exists")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate TEST.WEIGHTS (default OUTPUT_DIR/best.pth) on the test split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    return parser


def main(argv=None):
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = load_cfg(args.config_file, args.opts)
    try:
        results = eval_only(cfg) if args.eval_only else fit(cfg, resume=args.resume, progress=not args.no_progress)
        if not dist.is_initialized() or dist.get_rank() == 0:
            print(json.dumps(results))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
