# LazyConfig twin of mask_rcnn_R_50_FPN_voc2012_single_adarand.yaml: Mask R-CNN R50-FPN on VOC 2012 instance
# segmentation (single-category images), AdaRand on the box-head features.
#   python tools/lazyconfig_train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_single_adarand.py
from .common.data_voc2012_seg import dataloader
from .common.mask_rcnn_R_50_FPN_voc_adarand import lr_multiplier, model, optimizer, train

model.roi_heads.adarand.METHOD = "adarand"
dataloader.train.dataset.names = "voc_2012_seg_train_single"
dataloader.test.dataset.names = "voc_2012_seg_val_single"
train.output_dir = "./output/lazy/mask_rcnn_R_50_FPN_voc2012_single_adarand"
