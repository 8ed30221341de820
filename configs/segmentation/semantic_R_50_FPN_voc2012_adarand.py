# LazyConfig twin of semantic_R_50_FPN_voc2012_adarand.yaml: Semantic FPN R50 (Panoptic FPN's semantic branch)
# fine-tuned from COCO Panoptic FPN on VOC 2012 semantic segmentation, AdaRand on the 128-d per-pixel features
# the head's 1x1 predictor reads (docs/segmentation.md).
#   python tools/lazyconfig_train_net.py --config-file configs/segmentation/semantic_R_50_FPN_voc2012_adarand.py
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.modeling import SemanticSegmentor
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from adarand.detection import AdaRandSemSegFPNHead, adarand_options

from .common.data_voc2012_sem_seg import dataloader

_panoptic = get_config("common/models/panoptic_fpn.py").model
_panoptic.backbone.bottom_up.freeze_at = 2
model = L(SemanticSegmentor)(
    backbone=_panoptic.backbone,
    sem_seg_head=_panoptic.sem_seg_head,
    pixel_mean=[103.530, 116.280, 123.675],  # the COCO model's (BGR, unit std), as the YAML config
    pixel_std=[1.0, 1.0, 1.0],
)
model.sem_seg_head._target_ = AdaRandSemSegFPNHead
model.sem_seg_head.num_classes = 21  # VOC: background + 20 classes (stuff_classes of voc_2012_sem_seg_*)
model.sem_seg_head.ignore_value = 255  # VOC's void border
model.sem_seg_head.loss_weight = 1.0
# The MODEL.ADARAND keys of the YAML configs (docs/detection.md), under the same names.
model.sem_seg_head.adarand = adarand_options(METHOD="adarand", LAMBDA=1.0, ALPHA=0.5, PRIOR_LR=0.01)
model.sem_seg_head.prior_total_steps = "${...train.max_iter}"  # the prior's cosine schedule spans the run

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01

train = get_config("common/train.py").train
train.max_iter = 20000
train.init_checkpoint = (  # COCO Panoptic FPN R50 3x: backbone, FPN and semantic head; offline: a local copy
    "detectron2://COCO-PanopticSegmentation/panoptic_fpn_R_50_3x/139514569/model_final_c10459.pkl")
train.checkpointer.period = 2000
train.eval_period = 0  # evaluate once, at the end
train.output_dir = "./output/lazy/semantic_R_50_FPN_voc2012_adarand"

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[14000, 18000, 20000]),
    warmup_length=500 / 20000,
    warmup_factor=0.001,
)
