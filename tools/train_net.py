#!/usr/bin/env python
"""Fine-tune Mask R-CNN with AdaRand (or any regularizer of the library) in Detectron2.

    python tools/train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml
    python tools/train_net.py --config-file ... --num-gpus 8 [--resume [--allow-config-change]] [KEY VALUE ...]
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS ... TEST.VIS_NUM_IMAGES 20
        (also draws ground truth | predictions of the first 20 test images to OUTPUT_DIR/inference/vis/)
"""
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from adarand.detection import AdaRandTrainer, SafeDetectionCheckpointer, setup_cfg
from adarand.detection.trainer import check_weights
from adarand.run_config import DET_SAFE_RESUME_KEYS, add_resume_arguments


def main(args):
    cfg = setup_cfg(args, claim_output=not args.eval_only)
    if args.eval_only:
        model = AdaRandTrainer.build_model(cfg)
        check_weights(cfg.MODEL.WEIGHTS)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR, exact_shapes=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        res = AdaRandTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = AdaRandTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = add_resume_arguments(default_argument_parser(), DET_SAFE_RESUME_KEYS, "iteration").parse_args()
    print("Command Line Args:", args)
    launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
