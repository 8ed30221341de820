#!/usr/bin/env python
"""Fine-tune Mask R-CNN with AdaRand (or any regularizer of the library) in Detectron2.

    python tools/train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml
    python tools/train_net.py --config-file ... --num-gpus 8 [--resume] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... TEST.VIS_NUM_IMAGES 20
        (also draws ground truth | predictions of the first 20 test images to OUTPUT_DIR/inference/vis/)
"""
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from adarand.detection import AdaRandTrainer, SafeDetectionCheckpointer, add_adarand_config, check_adarand_config
from adarand.files import claim_output_dir
from adarand.detection.mobilenet_fpn import add_mobilenet_config
from adarand.detection.trainer import check_weights


def setup(args, claim_output=False):
    """get_cfg + the plugin's keys, merged with the file and the command-line overrides.

    ``claim_output``: lock OUTPUT_DIR for this run and, unless --resume, refuse it when it
    already holds another run's checkpoint (before anything is written there).
    """
    cfg = get_cfg()
    add_adarand_config(cfg)
    add_mobilenet_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    check_adarand_config(cfg)
    cfg.freeze()
    if claim_output and comm.is_main_process():
        claim_output_dir(cfg.OUTPUT_DIR, args.resume, ("last_checkpoint",))
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="adarand")
    return cfg


def main(args):
    cfg = setup(args, claim_output=not args.eval_only)
    if args.eval_only:
        model = AdaRandTrainer.build_model(cfg)
        check_weights(cfg.MODEL.WEIGHTS)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = AdaRandTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = AdaRandTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
