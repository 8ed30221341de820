#!/usr/bin/env python
"""Class-wise statistics of a pre-trained model's regularized features (AdaRand's prior, Eq. 9-10).

    python tools/compute_prior.py --config-file configs/detection/<x>.yaml [--output stats.pt] [--overwrite] \
        [KEY VALUE ...]

Loads MODEL.WEIGHTS, runs backbone -> ROIPooler on the ROIs of DATASETS.TRAIN that
MODEL.ADARAND.STATS_ROIS names -> box head (and, for a semantic-segmentation head, every labelled
cell of the features its predictor reads), and saves an ``adarand.ClassStats`` file per branch
(default: OUTPUT_DIR/adarand_stats.pt, the cache train_net.py looks for; a cascade head
regularizing several stages gets one file per stage, ``<stem>_stage<k>.pt``, a sem-seg head
``<stem>_sem_seg.pt``). Pass it to
training as MODEL.ADARAND.STATS_FILE. An existing file is replaced only with ``--overwrite``.
"""
import os

from detectron2.engine import default_argument_parser, launch
from detectron2.modeling import build_model
from detectron2.utils import comm

from adarand.detection import (
    SafeDetectionCheckpointer, compute_box_head_stats, regularizations, setup_cfg, stats_path,
)
from adarand.detection.prior_init import branch_path
from adarand.detection.trainer import check_weights


def main(args):
    cfg = setup_cfg(args)
    model = build_model(cfg)
    path = args.output or stats_path(cfg)
    existing = [branch_path(path, branch) for branch in regularizations(model)
                if os.path.exists(branch_path(path, branch))]
    if existing and not args.overwrite:
        raise FileExistsError(f"refusing to overwrite the statistics file(s) {', '.join(existing)}: pass "
                              "--overwrite to replace them, or another --output")
    check_weights(cfg.MODEL.WEIGHTS)
    SafeDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    for branch, stats in zip(regularizations(model), compute_box_head_stats(cfg, model)):
        if comm.is_main_process():
            stats.save(branch_path(path, branch))
            print(f"saved class statistics of {stats.num_classes} classes x {stats.feat_dim} features "
                  f"({int(stats.count.sum())} {branch.ROWS}) to {branch_path(path, branch)}")


def argument_parser():
    parser = default_argument_parser()
    parser.add_argument("--output", default="", help="statistics file (default: OUTPUT_DIR/adarand_stats.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing statistics file")
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
