# Pascal VOC 2012 semantic segmentation (21 classes: background + 20) for tools/lazyconfig_train_net.py, as
# Base-AdaRand-SemanticFPN.yaml reads it; plus `dataloader.stats`, the images the prior's statistics are
# computed on (the training set, test-time resize, no flip).
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from omegaconf import OmegaConf

from adarand.detection.prior_init import stats_loader
from adarand.detection.trainer import sem_seg_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="voc_2012_sem_seg_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(320, 384, 448, 512, 576, 640), sample_style="choice",
                                    max_size=1024),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="voc_2012_sem_seg_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=512, max_size=1024)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(sem_seg_evaluator)(  # mIoU, fwIoU, mACC, pACC
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}/inference",
)

dataloader.stats = L(stats_loader)(
    dataset_names="${..train.dataset.names}",
    min_size=512,
    max_size=1024,
    image_format="${..train.mapper.image_format}",
    max_images="${...model.sem_seg_head.adarand.STATS_MAX_IMAGES}",
    labels="${...model.sem_seg_head.adarand.LABELS}",
)
