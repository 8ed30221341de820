# Mask R-CNN R50-FPN fine-tuned from COCO on 20 VOC classes with AdaRand on the box-head features:
# detectron2's own LazyConfig model with the AdaRand ROI heads, and the schedule of
# configs/detection/Base-AdaRand-RCNN-FPN.yaml (8 images a batch, lr 0.01, 9k iterations).
from detectron2.config import LazyCall as L
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from adarand.detection import AdaRandROIHeads, adarand_options

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.freeze_at = 2
model.roi_heads._target_ = AdaRandROIHeads
model.roi_heads.num_classes = 20
# The MODEL.ADARAND keys of the YAML configs (docs/detection.md), under the same names.
model.roi_heads.adarand = adarand_options(METHOD="adarand", LAMBDA=1.0, ALPHA=0.5, PRIOR_LR=0.01)
model.roi_heads.prior_total_steps = "${...train.max_iter}"  # the prior's cosine schedule spans the run

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01

train = get_config("common/train.py").train
train.max_iter = 9000
train.init_checkpoint = (  # COCO Mask R-CNN R50-FPN 3x; offline: a local copy
    "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl")
train.checkpointer.period = 1000
train.eval_period = 0  # evaluate once, at the end

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[6000, 8000, 9000]),
    warmup_length=500 / 9000,
    warmup_factor=0.001,
)
