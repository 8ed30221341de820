"""A tiny Mask R-CNN for CPU tests: ResNet-18-FPN, random init, 64 x 96 images.

GroupNorm, not BN: a random-init BN net gives eval-mode features (the prior statistics)
far from its train-mode ones; GN behaves the same in both modes, as FrozenBN does.
"""
import os

from detectron2.config import get_cfg

from adarand.detection import add_adarand_config, register_voc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_CONFIG = os.path.join(REPO, "configs", "detection", "mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml")


def tiny_opts(output_dir, max_iter=3, **extra):
    """Command-line style overrides shrinking the paper config to a seconds-long CPU run."""
    opts = {
        "MODEL.WEIGHTS": "", "MODEL.DEVICE": "cpu",
        "MODEL.BACKBONE.FREEZE_AT": 0, "MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
        "MODEL.RESNETS.NORM": "GN", "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 64,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 200, "MODEL.RPN.POST_NMS_TOPK_TEST": 32,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32, "MODEL.ROI_BOX_HEAD.FC_DIM": 64,
        "MODEL.ROI_MASK_HEAD.CONV_DIM": 16, "MODEL.ROI_MASK_HEAD.NUM_CONV": 1,
        "INPUT.MIN_SIZE_TRAIN": (64,), "INPUT.MAX_SIZE_TRAIN": 96, "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 96, "DATASETS.TEST": (), "DATALOADER.NUM_WORKERS": 0, "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.BASE_LR": 0.005, "SOLVER.STEPS": (), "SOLVER.MAX_ITER": max_iter, "SOLVER.WARMUP_ITERS": 0,
        "SOLVER.CHECKPOINT_PERIOD": 2, "TEST.DETECTIONS_PER_IMAGE": 20, "OUTPUT_DIR": str(output_dir),
        "SEED": 0,
    }
    opts.update(extra)
    flat = []
    for key, value in opts.items():
        flat += [key, str(value) if not isinstance(value, str) else value]
    return flat


def tiny_cfg(output_dir, config_file=BASE_CONFIG, **extra):
    cfg = get_cfg()
    add_adarand_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(tiny_opts(output_dir, **extra))
    return cfg
