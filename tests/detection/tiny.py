"""A tiny Mask R-CNN for CPU tests: ResNet-18-FPN, random init, 64 x 96 images.

GroupNorm, not BN: a random-init BN net gives eval-mode features (the prior statistics)
far from its train-mode ones; GN behaves the same in both modes, as FrozenBN does.
"""
import os

from adarand.detection import load_detection_cfg

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
    """The config the entry points build (``adarand.detection.load_detection_cfg``), shrunk; not frozen."""
    return load_detection_cfg(config_file, tiny_opts(output_dir, **extra))


LAZY_CONFIG = os.path.join(REPO, "configs", "detection", "mask_rcnn_R_50_FPN_voc2012_single_adarand.py")

# Helper names start with _ so that LazyConfig.load does not take them for config sections.
_LAZY_HEAD = '''from detectron2.config import LazyConfig
from detectron2.layers import ShapeSpec

_base = LazyConfig.load({base!r})
model, dataloader, optimizer, lr_multiplier, train = (
    _base.model, _base.dataloader, _base.optimizer, _base.lr_multiplier, _base.train)

'''
_LAZY_BACKBONE = '''_bottom_up = model.backbone.bottom_up
_bottom_up.freeze_at = 0
_bottom_up.stem.norm = "GN"
_bottom_up.stages.depth = 18
_bottom_up.stages.norm = "GN"
del _bottom_up.stages.stride_in_1x1
model.backbone.out_channels = 32
'''
_LAZY_TRAINING = '''for _loader in (dataloader.train, dataloader.test):
    _loader.num_workers = 0
dataloader.train.total_batch_size = 2
dataloader.train.mapper.augmentations = [dict(dataloader.train.mapper.augmentations[0], short_edge_length=(64,), max_size=96)]
dataloader.test.mapper.augmentations = [dict(dataloader.test.mapper.augmentations[0], short_edge_length=64, max_size=96)]
dataloader.stats.min_size, dataloader.stats.max_size = 64, 96

optimizer.lr = 0.005
lr_multiplier.warmup_length = 0.0
lr_multiplier.scheduler.milestones = [100, 200, 300]
train.device = "cpu"
train.init_checkpoint = ""
train.max_iter = 4
train.checkpointer.period = 2
train.log_period = 1
train.output_dir = {output_dir!r}
train.seed = 0
'''

TINY_LAZY = ("# The shipped LazyConfig shrunk to a seconds-long CPU run (what tiny_opts does for the YAML configs).\n" + _LAZY_HEAD + _LAZY_BACKBONE + '''model.proposal_generator.head.in_channels = 32
model.proposal_generator.pre_nms_topk = (200, 200)
model.proposal_generator.post_nms_topk = (64, 32)
_heads = model.roi_heads
_heads.batch_size_per_image = 32
_heads.box_head.input_shape = ShapeSpec(channels=32, height=7, width=7)
_heads.box_head.fc_dims = [64, 64]
_heads.box_predictor.input_shape = ShapeSpec(channels=64)
_heads.box_predictor.test_score_thresh = 0.0
_heads.box_predictor.test_topk_per_image = 20
_heads.mask_head.input_shape = ShapeSpec(channels=32, width=14, height=14)
_heads.mask_head.conv_dims = [16, 16]
_heads.adarand.SCALE_LOG_PERIOD = 2

'''
             + _LAZY_TRAINING + '''dataloader.test.dataset.names = "voc_2012_seg_val"
''')


def write_tiny_lazy_config(path, output_dir, base=LAZY_CONFIG):
    """A LazyConfig file loading ``base`` and shrinking it like :func:`tiny_opts`; returns its path."""
    with open(path, "w") as f:
        f.write(TINY_LAZY.format(base=base, output_dir=str(output_dir)))
    return str(path)


SEM_SEG_CONFIG = os.path.join(REPO, "configs", "segmentation", "semantic_R_50_FPN_voc2012_adarand.yaml")
DEEPLAB_CONFIG = os.path.join(REPO, "configs", "segmentation", "deeplab_v3_plus_R_50_voc2012_adarand.yaml")
# The semantic heads shrunk as tiny_opts shrinks the R-CNN: 32 features (GroupNorm's 32 groups), no crop.
TINY_SEM_SEG = {"MODEL.SEM_SEG_HEAD.CONVS_DIM": 32, "MODEL.SEM_SEG_HEAD.NORM": "GN",
                "DATASETS.TRAIN": ("voc_2012_sem_seg_train",), "MODEL.ADARAND.PIXELS_PER_IMAGE": 32}
TINY_DEEPLAB = {**TINY_SEM_SEG, "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS": 32, "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS": [32],
                "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS": [1, 2, 3], "INPUT.CROP.ENABLED": False,
                "MODEL.RESNETS.RES5_DILATION": 1}


def tiny_sem_seg_cfg(output_dir, config_file=SEM_SEG_CONFIG, **extra):
    """A shipped segmentation config shrunk like :func:`tiny_cfg` (ResNet-18, GN, 64 x 96 images); not frozen."""
    tiny = TINY_DEEPLAB if config_file == DEEPLAB_CONFIG else TINY_SEM_SEG
    return load_detection_cfg(config_file, tiny_opts(output_dir, **{**tiny, **extra}))


SIZE = (64, 96)
# tiny_batch's box classes; its semantic classes (PanopticFPN's: the stuff classes and one for all things)
THINGS, STUFF = 3, 4


def panoptic_cfg(output_dir, **extra):
    """A tiny PanopticFPN with both AdaRand heads (box: THINGS classes; semantic: STUFF), no masks; not frozen."""
    return tiny_cfg(output_dir, **{
        "MODEL.META_ARCHITECTURE": "PanopticFPN", "MODEL.MASK_ON": False,
        "MODEL.ROI_HEADS.NAME": "AdaRandROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES": THINGS,
        "MODEL.SEM_SEG_HEAD.NAME": "AdaRandSemSegFPNHead", "MODEL.SEM_SEG_HEAD.NUM_CLASSES": STUFF,
        **TINY_SEM_SEG, "MODEL.ADARAND.LAMBDA": 1.0, "SOLVER.MAX_ITER": 4, **extra})


def tiny_batch(seed=0):
    """Two SIZE images as a dataset mapper gives them: ``image``, ``instances`` (every box class) and ``sem_seg``
    (every semantic class, an ignore band)."""
    import torch
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for i in range(2):
        instances = Instances(SIZE)
        instances.gt_boxes = Boxes(torch.tensor([[4.0, 4.0, 40.0, 36.0], [44.0, 20.0, 90.0, 60.0]]) + i)
        instances.gt_classes = torch.tensor([i, 2])
        sem_seg = torch.zeros(SIZE, dtype=torch.long)
        sem_seg[:, 24:48], sem_seg[:, 48:72], sem_seg[:, 72:] = 1, 2, 3
        sem_seg[:6] = 255
        batch.append({"image": torch.randint(0, 256, (3,) + SIZE, generator=g, dtype=torch.uint8).float(),
                      "instances": instances, "sem_seg": sem_seg, "height": SIZE[0], "width": SIZE[1]})
    return batch


LAZY_SEM_SEG_CONFIG = os.path.join(REPO, "configs", "segmentation", "semantic_R_50_FPN_voc2012_adarand.py")

TINY_LAZY_SEM_SEG = ("# The shipped Semantic FPN LazyConfig shrunk as TINY_SEM_SEG shrinks the YAML one.\n"
                     + _LAZY_HEAD + _LAZY_BACKBONE + '''model.sem_seg_head.conv_dims = 32
model.sem_seg_head.adarand.PIXELS_PER_IMAGE = 32
model.sem_seg_head.adarand.ALLOW_MISSING_CLASSES = True
model.sem_seg_head.adarand.SCALE_LOG_PERIOD = 2

''' + _LAZY_TRAINING)


def write_tiny_lazy_sem_seg_config(path, output_dir):
    """The Semantic FPN LazyConfig shrunk to a seconds-long CPU run, written to ``path``; returns its path."""
    with open(path, "w") as f:
        f.write(TINY_LAZY_SEM_SEG.format(base=LAZY_SEM_SEG_CONFIG, output_dir=str(output_dir)))
    return str(path)
