# LazyConfig twin of mask_rcnn_R_50_FPN_voc2012_full_ft.yaml: Mask R-CNN R50-FPN on VOC 2012 instance
# segmentation (all images), plain fine-tuning (METHOD none).
#   python tools/lazyconfig_train_net.py --config-file configs/detection/mask_rcnn_R_50_FPN_voc2012_full_ft.py
from .common.data_voc2012_seg import dataloader
from .common.mask_rcnn_R_50_FPN_voc_adarand import lr_multiplier, model, optimizer, train

model.roi_heads.adarand.METHOD = "none"
dataloader.train.dataset.names = "voc_2012_seg_train"
dataloader.test.dataset.names = "voc_2012_seg_val"
train.output_dir = "./output/lazy/mask_rcnn_R_50_FPN_voc2012_full_ft"
